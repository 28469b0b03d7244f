/**
 * HTTP routes of streams: the MJPEG output for OBS (multipart/x-mixed-replace, a part per output frame and
 * the last frame repeated every second so viewers never stall), a JPEG snapshot, and the list of streams.
 */
import { Router } from 'express';
import { ServiceError } from '../../models/errors.ts';
import type { Logger } from '../log.ts';
import { OutputPush } from './push.ts';
import type { StreamRegistry } from './registry.ts';

const BOUNDARY = 'frame';
/** Repeat the last frame this often when the stream is idle (OBS and browsers show the last complete part). */
const KEEPALIVE_MS = 1000;

export function streamRoutes(registry: StreamRegistry, log: Logger): Router {
  const router = Router();
  const pushes = new Map<string, OutputPush>();

  router.get('/v1/streams', (_req, res) => {
    res.json({
      streams: registry.all().map((s) => ({ id: s.id, mode: s.start.mode, width: s.size.width, height: s.size.height, params: s.params, stats: s.stats })),
    });
  });

  router.get('/v1/streams/:id/mjpeg', (req, res) => {
    const session = registry.get(req.params.id);
    res.locals['longLived'] = true; // open while the stream runs: shutdown does not wait for it
    res.writeHead(200, {
      'Content-Type': `multipart/x-mixed-replace;boundary=${BOUNDARY}`,
      'Cache-Control': 'no-cache, no-store',
      Connection: 'close',
      Pragma: 'no-cache',
    });
    res.flushHeaders(); // viewers get the headers at once, even before the stream's first frame
    let last = session.latestJpeg;
    const writePart = (jpeg: Buffer) => {
      // Skip a part when the socket is still busy with earlier ones: a slow viewer gets fewer frames, not a queue.
      if (res.writableLength > jpeg.length * 2) return;
      res.write(`--${BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`);
      res.write(jpeg);
      res.write('\r\n');
    };
    const onFrame = (jpeg: Buffer) => {
      last = jpeg;
      writePart(jpeg);
    };
    if (last) writePart(last);
    session.on('jpeg', onFrame);
    const keepalive = setInterval(() => last && writePart(last), KEEPALIVE_MS);
    const stop = () => {
      clearInterval(keepalive);
      session.off('jpeg', onFrame);
      res.end();
    };
    session.once('close', stop);
    req.on('close', () => {
      clearInterval(keepalive);
      session.off('jpeg', onFrame);
      session.off('close', stop);
    });
  });

  router.get('/v1/streams/:id/snapshot', (req, res) => {
    const jpeg = registry.get(req.params.id).latestJpeg;
    if (!jpeg) throw new ServiceError('not_found', 'the stream has no output frame yet');
    res.type('image/jpeg').setHeader('Cache-Control', 'no-store');
    res.send(jpeg);
  });

  // Push the output to an RTMP/SRT ingest through ffmpeg: {"url": "rtmp://host/app/key" | "srt://host:port"}.
  router.post('/v1/streams/:id/push', async (req, res) => {
    const session = registry.get(req.params.id);
    await pushes.get(session.id)?.stop();
    const push = await OutputPush.start(session, (req.body as { url?: unknown } | undefined)?.url, log);
    pushes.set(session.id, push);
    session.once('close', () => pushes.delete(session.id));
    res.status(201).json({ stream_id: session.id, url: push.url.href, running: true });
  });

  router.get('/v1/streams/:id/push', (req, res) => {
    const push = pushes.get(registry.get(req.params.id).id);
    if (!push) throw new ServiceError('not_found', 'this stream has no push');
    res.json({ url: push.url.href, running: push.running, sent: push.sent, dropped: push.dropped, error: push.error ?? null });
  });

  router.delete('/v1/streams/:id/push', async (req, res) => {
    const id = registry.get(req.params.id).id;
    const push = pushes.get(id);
    if (!push) throw new ServiceError('not_found', 'this stream has no push');
    await push.stop();
    pushes.delete(id);
    res.status(204).end();
  });

  return router;
}

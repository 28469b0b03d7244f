/**
 * HTTP routes of streams: the MJPEG output for OBS (server/streams/mjpeg.ts) and a JPEG snapshot, by stream id
 * (valid while the stream runs) and by stream name (stable: a placeholder while no stream of that name
 * runs), the list of streams, and the RTMP/SRT push.
 */
import { Router, type Request, type Response } from 'express';
import { ServiceError } from '../../models/errors.ts';
import type { Logger } from '../log.ts';
import { serveMjpeg } from './mjpeg.ts';
import { STREAM_NAME, STREAM_NAME_RULE } from './protocol.ts';
import { OutputPush } from './push.ts';
import type { StreamRegistry } from './registry.ts';

/** The stream name in the path, checked (a 400 names the rule). */
function nameOf(req: Request<{ name: string }>): string {
  const name = req.params.name;
  if (!STREAM_NAME.test(name)) throw new ServiceError('bad_request', `stream name ${STREAM_NAME_RULE}`, { field: 'name' });
  return name;
}

function sendJpeg(res: Response, jpeg: Buffer, state: 'running' | 'waiting'): void {
  res.type('image/jpeg').setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Stream-State', state);
  res.send(jpeg);
}

export function streamRoutes(registry: StreamRegistry, log: Logger): Router {
  const router = Router();
  const pushes = new Map<string, OutputPush>();
  const names = registry.names;

  router.get('/v1/streams', (_req, res) => {
    res.json({
      streams: registry.all().map((s) => ({ id: s.id, name: s.name ?? null, mode: s.start.mode, width: s.size.width, height: s.size.height, params: s.params, stats: s.stats })),
    });
  });

  router.get('/v1/streams/by-name/:name', (req, res) => {
    const name = nameOf(req);
    const session = names.running(name);
    res.json({ name, running: session !== undefined, stream_id: session?.id ?? null, mjpeg_url: `/v1/streams/by-name/${name}/mjpeg`, snapshot_url: `/v1/streams/by-name/${name}/snapshot` });
  });

  router.get('/v1/streams/by-name/:name/mjpeg', async (req, res) => {
    const out = names.output(nameOf(req));
    if (!out.running) await out.waitingFrame();
    serveMjpeg(req, res, out);
    req.on('close', () => names.forgetIfIdle(out));
  });

  router.get('/v1/streams/by-name/:name/snapshot', async (req, res) => {
    const out = names.output(nameOf(req));
    const jpeg = await out.session?.snapshot();
    if (jpeg) sendJpeg(res, jpeg, 'running');
    else sendJpeg(res, await out.waitingFrame(), 'waiting');
    names.forgetIfIdle(out);
  });

  router.get('/v1/streams/:id/mjpeg', (req, res) => {
    serveMjpeg(req, res, registry.get(req.params.id));
  });

  router.get('/v1/streams/:id/snapshot', async (req, res) => {
    const jpeg = await registry.get(req.params.id).snapshot();
    if (!jpeg) throw new ServiceError('not_found', 'the stream has no output frame yet');
    sendJpeg(res, jpeg, 'running');
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

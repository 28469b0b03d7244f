/**
 * MJPEG over HTTP for OBS and browsers: multipart/x-mixed-replace, one part per output frame, and the last
 * frame repeated every second while nothing new comes, so viewers never stall or time out (REFERENCE §7).
 */
import type { Request, Response } from 'express';

const BOUNDARY = 'frame';
/** Repeat the last frame this often when idle (OBS and browsers show the last complete part). */
const KEEPALIVE_MS = 1000;

/** What a viewer watches: a stream (ends when it closes) or a stream name (never ends). */
export interface JpegSource {
  /** The frame to show now, if any. */
  readonly latestJpeg: Buffer | undefined;
  on(event: 'jpeg', listener: (jpeg: Buffer) => void): unknown;
  off(event: 'jpeg', listener: (jpeg: Buffer) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

/** Sends `source` to the viewer as MJPEG until the viewer leaves or the source closes. */
export function serveMjpeg(req: Request, res: Response, source: JpegSource): void {
  res.writeHead(200, {
    'Content-Type': `multipart/x-mixed-replace;boundary=${BOUNDARY}`,
    'Cache-Control': 'no-cache, no-store',
    Connection: 'close',
    Pragma: 'no-cache',
  });
  res.flushHeaders(); // viewers get the headers at once, even before the first frame
  let last = source.latestJpeg;
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
  const keepalive = setInterval(() => last && writePart(last), KEEPALIVE_MS);
  const detach = () => {
    clearInterval(keepalive);
    source.off('jpeg', onFrame);
    source.off('close', end);
  };
  const end = () => {
    detach();
    res.end();
  };
  if (last) writePart(last);
  source.on('jpeg', onFrame);
  source.once('close', end);
  req.on('close', detach);
}

/**
 * Optional push of a stream's output to an RTMP or SRT ingest (a streaming platform, or OBS as a Media
 * Source) through ffmpeg: output JPEGs go into ffmpeg's stdin as MJPEG, out comes H.264 in FLV (RTMP) or
 * MPEG-TS (SRT). A slow ingest costs frames, not memory: a frame is dropped while ffmpeg's stdin is full.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ServiceError } from '../../models/errors.ts';
import { defaultFfmpeg } from '../../pipelines/codecs/ffmpeg.ts';
import type { Logger } from '../log.ts';
import type { LiveStream } from './registry.ts';

/** Frame rate written into the H.264 stream; frames arrive at the stream's own pace. */
const PUSH_FPS = 30;

export function checkPushUrl(raw: unknown): URL {
  if (typeof raw !== 'string' || raw.length > 2048) throw new ServiceError('bad_request', 'url must be a string of at most 2048 characters', { field: 'url' });
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ServiceError('bad_request', `url is not a URL: ${raw}`, { field: 'url' });
  }
  if (!['rtmp:', 'rtmps:', 'srt:'].includes(url.protocol)) throw new ServiceError('bad_request', 'url must be rtmp://, rtmps:// or srt://', { field: 'url' });
  // A push connects out to an ingest. ffmpeg would otherwise open a listening port (srt mode=listener, a listen
  // option) that anyone who can reach it could pull the stream from, with no key.
  for (const [key, value] of url.searchParams) {
    const k = key.toLowerCase();
    if (k === 'listen' || k === 'rtmp_listen' || (k === 'mode' && value.toLowerCase() !== 'caller')) {
      throw new ServiceError('bad_request', `url: ${key}=${value} would make the server listen for viewers; a push only connects to an ingest (srt mode=caller)`, { field: 'url' });
    }
  }
  return url;
}

export class OutputPush {
  private readonly process: ChildProcess;
  private stderrTail = '';
  dropped = 0;
  sent = 0;
  private readonly onJpeg = (jpeg: Buffer) => this.write(jpeg);

  private constructor(
    ffmpeg: string,
    readonly url: URL,
    private readonly session: LiveStream,
    private readonly log: Logger,
  ) {
    const container = url.protocol === 'srt:' ? 'mpegts' : 'flv';
    // prettier-ignore
    const args = [
      '-hide_banner', '-loglevel', 'error',
      '-f', 'image2pipe', '-framerate', String(PUSH_FPS), '-c:v', 'mjpeg', '-i', 'pipe:0',
      '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p', '-g', String(PUSH_FPS * 2),
      '-f', container, url.href,
    ];
    this.process = spawn(ffmpeg, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.process.stderr!.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    this.process.stdin!.on('error', () => undefined); // ffmpeg exiting closes the pipe; reported on exit
    this.process.once('exit', (code) => {
      session.off('jpeg', this.onJpeg);
      if (code !== 0 && code !== null) log.warn('push ended', { stream: session.id, url: url.origin, code, stderr: this.stderrTail });
    });
    session.on('jpeg', this.onJpeg);
    session.once('close', () => this.stop());
  }

  static async start(session: LiveStream, rawUrl: unknown, log: Logger): Promise<OutputPush> {
    const url = checkPushUrl(rawUrl);
    const { ffmpeg } = await defaultFfmpeg();
    return new OutputPush(ffmpeg, url, session, log);
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  get error(): string | undefined {
    return this.running ? undefined : this.stderrTail.trim() || undefined;
  }

  private write(jpeg: Buffer): void {
    const stdin = this.process.stdin;
    if (!stdin || stdin.destroyed || !this.running) return;
    if (stdin.writableLength > 4 * jpeg.length) {
      this.dropped++;
      return;
    }
    this.sent++;
    stdin.write(jpeg);
  }

  /** Ends the input so ffmpeg flushes and closes the ingest; kills it if it does not exit soon. */
  stop(): Promise<void> {
    this.session.off('jpeg', this.onJpeg);
    if (!this.running) return Promise.resolve();
    return new Promise((done) => {
      const kill = setTimeout(() => this.process.kill('SIGKILL'), 3000);
      this.process.once('exit', () => {
        clearTimeout(kill);
        done();
      });
      this.process.stdin?.end();
    });
  }
}

/**
 * A real HTTP server on 127.0.0.1 (port 0) with the batch API mounted as server/app.ts mounts it:
 * JSON body parsing, the router, 404 and the error handler. The fixture pack (random weights) renders fast.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { Engine } from '../../../pipelines/engine.ts';
import { DEFAULT_CONFIG, type ServerConfig } from '../../../server/config.ts';
import { createContext, type AppContext } from '../../../server/context.ts';
import { errorHandler, notFound } from '../../../server/http-errors.ts';
import { createLogger } from '../../../server/log.ts';
import { Metrics } from '../../../server/metrics.ts';
import { createBatchApi, type BatchApi, type BatchOptions } from '../../../server/batch/index.ts';
import { BASE_PACK } from '../../helpers/fixtures.ts';

let engine: Promise<Engine> | undefined;

/** The fixture pack, loaded once per test file. */
export function fixtureEngine(): Promise<Engine> {
  engine ??= Engine.load(BASE_PACK);
  return engine;
}

export interface TestServer {
  readonly url: string;
  readonly api: BatchApi;
  readonly ctx: AppContext & { draining: boolean };
  readonly config: ServerConfig;
  /** Drains the jobs and closes the server. */
  close(): Promise<void>;
}

export interface ServerOptions {
  readonly dataDir?: string;
  readonly config?: Partial<ServerConfig>;
  readonly jobs?: BatchOptions;
  /** Changes the context before the API is built (e.g. a slowed-down UNet runner). */
  readonly wrap?: (ctx: AppContext & { draining: boolean }) => AppContext & { draining: boolean };
  /** The engine (default: the fixture pack's). */
  readonly engine?: Engine;
  /** Call jobs.start() (default true). */
  readonly start?: boolean;
}

export async function tempDir(prefix = 'batch-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const config: ServerConfig = {
    ...DEFAULT_CONFIG,
    modelDir: BASE_PACK,
    dataDir: options.dataDir ?? (await tempDir()),
    ...options.config,
  };
  const base = createContext(config, options.engine ?? (await fixtureEngine()), createLogger({}, 'error'), new Metrics());
  const ctx = options.wrap ? options.wrap(base) : base;
  const api = createBatchApi(ctx, { webhook: { timeoutMs: 2000, attempts: 2, backoffMs: 50 }, ...options.jobs });
  const app = express();
  app.use(express.json({ limit: '50mb' }));
  app.use(api.router);
  app.use(notFound);
  app.use(errorHandler(ctx.log));
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
  const { port } = server.address() as AddressInfo;
  if (options.start !== false) await api.jobs.start();
  return {
    url: `http://127.0.0.1:${port}`,
    api,
    ctx,
    config,
    close: async () => {
      ctx.draining = true;
      await api.jobs.drain();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A parsed JSON response body: tests index into it freely, so it is `any` on purpose. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export async function postJson(url: string, body: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

export async function getJson(url: string): Promise<{ status: number; body: Json }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** Polls a job until `done(view)` or the timeout. */
export async function waitForJob(url: string, id: string, done: (job: Json) => boolean = (j) => ['succeeded', 'failed', 'canceled'].includes(j.status), timeoutMs = 60_000): Promise<Json> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await getJson(`${url}/v1/jobs/${id}`);
    if (done(body)) return body;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${body.status} (progress ${body.progress}) after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Whether a real ffmpeg is here (the video tests skip without one). */
export const HAVE_FFMPEG = spawnSync('ffmpeg', ['-version']).status === 0 || !!process.env['FFMPEG_PATH'];

/** Makes a test video with ffmpeg's lavfi sources: testsrc picture + sine audio. */
export function makeTestVideo(path: string, options: { seconds?: number; fps?: number; size?: string; audio?: boolean; source?: string } = {}): void {
  const { seconds = 2, fps = 10, size = '96x64', audio = true, source = 'testsrc' } = options;
  const args = ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', `${source}=size=${size}:rate=${fps}:duration=${seconds}`];
  if (audio) args.push('-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=44100:duration=${seconds}`, '-c:a', 'aac', '-b:a', '64k');
  args.push('-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-shortest', path);
  const r = spawnSync(process.env['FFMPEG_PATH'] ?? 'ffmpeg', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`could not make a test video: ${r.stderr}`);
}

export interface ProbedFile {
  readonly frames: number;
  readonly duration: number;
  readonly video: { codec: string; width: number; height: number; pix_fmt: string; frameRate: string } | undefined;
  readonly audio: { codec: string } | undefined;
}

/** ffprobe with frames counted by decoding. */
export function probe(path: string): ProbedFile {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-print_format', 'json', '-show_streams', '-show_format', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ffprobe failed: ${r.stderr}`);
  const info = JSON.parse(r.stdout) as { streams: Record<string, string | number>[]; format: { duration: string } };
  const v = info.streams.find((s) => s['codec_type'] === 'video');
  const a = info.streams.find((s) => s['codec_type'] === 'audio');
  return {
    frames: Number(v?.['nb_read_frames'] ?? 0),
    duration: Number(info.format.duration),
    video: v ? { codec: String(v['codec_name']), width: Number(v['width']), height: Number(v['height']), pix_fmt: String(v['pix_fmt']), frameRate: String(v['avg_frame_rate']) } : undefined,
    audio: a ? { codec: String(a['codec_name']) } : undefined,
  };
}

/**
 * What the live path can do on this machine, and what bounds it, measured side by side in one run:
 * - limits: the models alone, as the pipeline runs them (VAE encode of the next frame beside the UNet + decode of
 *   the current one, two frames in flight) and one after another (the sum of the three calls);
 * - end to end: WebSocket clients in another process (JPEG in and out, 2 steps, RCFG self, filter off, two frames
 *   in flight per stream) at 1 and 4 streams, with the tiny and the full VAE; frames per second (mean and median
 *   over several windows), latency p50/p95 as the server stamps it and as the client sees it;
 * - /health round trips while 8 streams run, with the models on worker threads and (for comparison) on the main
 *   thread.
 * Each end-to-end figure gets a "limits" line: the model-bound limit measured in this run and our ratio to it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, type RunningServer } from '../../server/app.ts';
import { Engine, type VaeChoice } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { decodeRgb8 } from '../../pipelines/codecs/image.ts';
import { createLogger } from '../../server/log.ts';
import { shapeFrame } from '../helpers/stream-client.ts';
import { fmt, summarize, type Summary } from './stats.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const TAESD_SHAPED = join(ROOT, 'test', 'fixtures', 'taesd-shaped');

export interface LiveBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

/** The acceptance settings of issue 19. */
const PARAMS = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', similarity_threshold: 1 } as const;

export interface LoadResult {
  readonly fps: number;
  readonly serverLatency: number[];
  readonly clientLatency: number[];
  readonly health: number[];
  /** Outputs by the expert and steps they got (or skipped). */
  readonly applied: Record<string, number>;
}

/** Runs ws-load.ts in a child process against `server`. */
export function loadFromChild(server: RunningServer, streams: number, seconds: number, params: Record<string, unknown>, healthEveryMs = 0, more: { start?: Record<string, unknown>; sendFps?: number; warmupSeconds?: number } = {}): Promise<LoadResult> {
  const args = JSON.stringify({ url: server.url, streams, seconds, params, healthEveryMs, ...more });
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'ws-load.ts'), args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((ok, fail) =>
    child.once('exit', (code) => {
      if (code !== 0) return fail(new Error(`ws-load exited ${code}: ${err.slice(-2000)}`));
      const r = JSON.parse(out.trim().split('\n').pop()!) as { outputs: number; seconds: number } & Omit<LoadResult, 'fps'>;
      ok({ fps: r.outputs / r.seconds, serverLatency: r.serverLatency, clientLatency: r.clientLatency, health: r.health, applied: r.applied });
    }),
  );
}

/** The pack, or a view of it with a TAESD-shaped tiny VAE (random weights: its speed only) when it has none. */
async function withTinyVae(engine: Engine, log: (line: string) => void): Promise<Engine> {
  if (engine.pack.tinyVae) return engine;
  const dir = await mkdtemp(join(tmpdir(), 'bench-taesd-'));
  for (const entry of await readdir(engine.pack.dir)) await symlink(join(engine.pack.dir, entry), join(dir, entry));
  for (const part of ['taesd_encoder', 'taesd_decoder']) await symlink(join(TAESD_SHAPED, part), join(dir, part));
  log(`The pack has no tiny VAE: the tiny-VAE figures use ${TAESD_SHAPED.slice(ROOT.length + 1)} (TAESD-shaped, random weights: its cost is real, its pictures are not).\n`);
  return Engine.load(dir);
}

/** Per-call round trips of the three models of a frame, one after another (as a frame would use them alone). */
async function modelCalls(engine: Engine, vae: VaeChoice, frames: readonly Uint8Array[], rounds: number): Promise<Record<'encode' | 'unet' | 'decode', Summary>> {
  const size = engine.size({});
  const { vae: pair } = engine.vae(vae, true);
  const prompt = await engine.encodePrompt(parseParams(PARAMS));
  const unet = engine.unetRunner(size);
  const times = { encode: [] as number[], unet: [] as number[], decode: [] as number[] };
  for (let i = 0; i < rounds + 3; i++) {
    let t = performance.now();
    const [z] = await engine.encodeImages([frames[i % frames.length]!.slice()], size, pair, true);
    const encode = performance.now() - t;
    t = performance.now();
    const eps = await unet([
      { sample: z!, timestep: 599, context: prompt.cond },
      { sample: z!, timestep: 299, context: prompt.cond },
    ]);
    const unetMs = performance.now() - t;
    t = performance.now();
    await engine.decodeToRgb8([eps[1]!], size, pair);
    const decode = performance.now() - t;
    if (i < 3) continue; // warm-up
    times.encode.push(encode);
    times.unet.push(unetMs);
    times.decode.push(decode);
  }
  return { encode: summarize(times.encode), unet: summarize(times.unet), decode: summarize(times.decode) };
}

/**
 * The models alone, pipelined as streams run them: each frame's encode starts when the frame enters, its UNet
 * call (batch 2: the new frame and the one in flight) waits for its stream's previous one, its decode follows;
 * `inFlight` frames per stream. Frames per second (all streams) over `seconds`.
 */
async function modelBound(engine: Engine, vae: VaeChoice, frames: readonly Uint8Array[], seconds: number, streams: number, inFlight = 2): Promise<number> {
  const size = engine.size({});
  const { vae: pair } = engine.vae(vae, true);
  const prompt = await engine.encodePrompt(parseParams(PARAMS));
  const unet = engine.unetRunner(size);
  const previous: Promise<unknown>[] = new Array<Promise<unknown>>(streams).fill(Promise.resolve());
  let done = 0;
  let k = 0;
  const frame = async (s: number) => {
    const z = engine.encodeImages([frames[k++ % frames.length]!.slice()], size, pair, true);
    const step = previous[s]!.then(async () => {
      const [latent] = await z;
      return unet([
        { sample: latent!, timestep: 599, context: prompt.cond },
        { sample: latent!, timestep: 299, context: prompt.cond },
      ]);
    });
    previous[s] = step;
    await engine.decodeToRgb8([(await step)[1]!], size, pair);
    done++;
  };
  const run = (until: number) =>
    Promise.all(
      Array.from({ length: streams * inFlight }, async (_, lane) => {
        while (performance.now() < until) await frame(lane % streams);
      }),
    );
  await run(performance.now() + 1000); // warm-up
  done = 0;
  const t0 = performance.now();
  await run(t0 + seconds * 1000);
  return done / ((performance.now() - t0) / 1000);
}

const pct = (x: number) => `${fmt(100 * x, 0)}%`;
const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

export async function benchLive({ engine: base, quick, log }: LiveBenchOptions): Promise<Record<string, unknown>> {
  const engine = await withTinyVae(base, log);
  const windows = quick ? 2 : 4;
  const seconds = quick ? 3 : 6;
  const size = engine.size({});
  const jpegs = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => shapeFrame({ x: 24 + i * 10, size: size.width })));
  const rgbs = await Promise.all(jpegs.map(async (j) => (await decodeRgb8(j, size.width, size.height)).rgb));
  const results: Record<string, unknown> = {};

  // 1. the models' own figures: each call alone, and their sum (one after another)
  const calls: Partial<Record<VaeChoice, Record<string, Summary>>> = {};
  for (const vae of ['tiny', 'full'] as VaeChoice[]) calls[vae] = await modelCalls(engine, vae, rgbs, quick ? 30 : 100);
  const sequential = (vae: VaeChoice) => 1000 / (calls[vae]!['encode']!.median + calls[vae]!['unet']!.median + calls[vae]!['decode']!.median);
  log(`### The models of a frame (${size.width}x${size.height}, 2-step stream batch; ${engine.pack.sessions.workerCount} worker threads)\n`);
  log('| VAE | VAE encode | UNet batch 2 | VAE decode | one after another |');
  log('| --- | --- | --- | --- | --- |');
  for (const vae of ['tiny', 'full'] as VaeChoice[]) {
    const c = calls[vae]!;
    log(`| ${vae} | ${fmt(c['encode']!.median)} ms | ${fmt(c['unet']!.median)} ms | ${fmt(c['decode']!.median)} ms | ${fmt(sequential(vae), 1)} fps |`);
  }
  log('\nMedians of round trips to the worker threads (the call, its messages and the copy of its inputs).');

  // 2. end to end over WebSockets (clients in another process), each window beside the model-bound limit of its
  // case measured right before it: the models alone, pipelined as the streams run them
  const quiet = createLogger({}, 'error');
  const server = await startServer({ port: 0, maxStreams: 16, maxStreamsPerClient: 16, rateLimitPerMinute: 0 }, { engine, log: quiet });
  const cases = [
    { streams: 1, vae: 'tiny' },
    { streams: 1, vae: 'full' },
    { streams: 4, vae: 'tiny' },
    { streams: 4, vae: 'full' },
  ] as const;
  const runs = new Map<string, { limit: number[]; load: LoadResult[] }>(cases.map((c) => [`${c.streams}/${c.vae}`, { limit: [], load: [] }]));
  for (let w = 0; w < windows; w++) {
    for (const c of w % 2 ? [...cases].reverse() : cases) {
      const r = runs.get(`${c.streams}/${c.vae}`)!;
      r.limit.push(await modelBound(engine, c.vae, rgbs, seconds / 2, c.streams));
      r.load.push(await loadFromChild(server, c.streams, seconds, { ...PARAMS, vae: c.vae }));
    }
  }
  log(`\n### End to end: WebSocket clients in another process (JPEG in and out, 2 steps, RCFG self, filter off, 2 frames in flight per stream; ${windows} windows of ${seconds} s)\n`);
  log('| streams | VAE | fps (mean / median of windows) | latency p50 / p95 (server) | latency p50 / p95 (client) | limits: models pipelined / one after another | ratio to the limits |');
  log('| --- | --- | --- | --- | --- | --- | --- |');
  const e2e: Record<string, unknown>[] = [];
  for (const c of cases) {
    const { limit, load } = runs.get(`${c.streams}/${c.vae}`)!;
    const fps = summarize(load.map((x) => x.fps));
    const serverLatency = summarize(load.flatMap((x) => x.serverLatency));
    const clientLatency = summarize(load.flatMap((x) => x.clientLatency));
    const pipelined = summarize(limit);
    // each window against the limit measured beside it: the shared machine's load moves both together
    const ratios = summarize(load.map((x, i) => x.fps / limit[i]!));
    e2e.push({ streams: c.streams, vae: c.vae, fps, server_latency_ms: serverLatency, client_latency_ms: clientLatency, limit_pipelined_fps: pipelined, limit_sequential_fps: sequential(c.vae), ratio_to_pipelined: ratios });
    log(
      `| ${c.streams} | ${c.vae} | ${fmt(fps.mean, 1)} / ${fmt(fps.median, 1)} | ${fmt(serverLatency.median, 1)} / ${fmt(serverLatency.p95, 1)} ms | ${fmt(clientLatency.median, 1)} / ${fmt(clientLatency.p95, 1)} ms | ${fmt(pipelined.mean, 1)} / ${fmt(sequential(c.vae), 1)} fps | ${pct(ratios.mean)} / ${pct(fps.mean / sequential(c.vae))} |`,
    );
  }
  log('\nLatency runs from the arrival (server) or send (client) of the input an output shows to the output; with 2 steps an output shows the frame before the latest, so it spans about two frame times. The pipelined limit is the models alone, fed as the stream pipeline feeds them, measured right before each window; its ratio is the mean of the windows\' ratios. At 4 streams fps and limits are sums over the streams.');
  results['models'] = calls;
  results['end_to_end'] = e2e;

  // 3. /health while 8 streams run: models on worker threads, and on the main thread for comparison
  const inThread = await Engine.load(engine.pack.dir, { provider: 'cpu', threads: 1, workers: 0 });
  const blocking = await startServer({ port: 0, maxStreams: 16, maxStreamsPerClient: 16, rateLimitPerMinute: 0 }, { engine: inThread, log: quiet });
  const health: Record<string, LoadResult[]> = { workers: [], 'main thread': [] };
  for (let w = 0; w < windows; w++) {
    health['workers']!.push(await loadFromChild(server, 8, seconds, PARAMS, 10));
    health['main thread']!.push(await loadFromChild(blocking, 8, seconds, PARAMS, 10));
  }
  log('\n### /health while 8 streams run (a GET every 10 ms from the client process)\n');
  log('| models run on | /health p50 | p99 | max | aggregate fps |');
  log('| --- | --- | --- | --- | --- |');
  const healthResults: Record<string, unknown> = {};
  for (const [where, r] of Object.entries(health)) {
    const h = summarize(r.flatMap((x) => x.health));
    const fps = summarize(r.map((x) => x.fps));
    healthResults[where] = { health_ms: h, fps };
    log(`| ${where} | ${fmt(h.median, 1)} ms | ${fmt(h.p99, 1)} ms | ${fmt(h.max, 1)} ms | ${fmt(fps.mean, 1)} |`);
  }
  results['health_under_load'] = healthResults;
  await Promise.all([server.close(), blocking.close()]);
  await inThread.close();

  // 4. the targets of issue 19, as this run measured them
  const one = (vae: VaeChoice) => {
    const r = e2e.find((x) => x['streams'] === 1 && x['vae'] === vae) as { fps: Summary; server_latency_ms: Summary; ratio_to_pipelined: Summary };
    return { ...r, ratio_to_pipelined: r.ratio_to_pipelined.mean };
  };
  const h = (healthResults['workers'] as { health_ms: Summary }).health_ms;
  log('\n### Targets (a quiet 2-core machine is assumed; read these against the limits above on a loaded one)\n');
  log(`- 1 stream, tiny VAE: ${fmt(one('tiny').fps.mean, 1)} fps (target >= 90: ${verdict(one('tiny').fps.mean >= 90)}), latency p50 ${fmt(one('tiny').server_latency_ms.median, 1)} ms (target <= 35: ${verdict(one('tiny').server_latency_ms.median <= 35)})`);
  log(`- 1 stream, full VAE: ${fmt(one('full').fps.mean, 1)} fps (target >= 70: ${verdict(one('full').fps.mean >= 70)})`);
  log(`- end to end / model-bound limit: tiny ${pct(one('tiny').ratio_to_pipelined)}, full ${pct(one('full').ratio_to_pipelined)} (target >= 85%: ${verdict(Math.min(one('tiny').ratio_to_pipelined, one('full').ratio_to_pipelined) >= 0.85)})`);
  log(`- /health p99 with 8 streams: ${fmt(h.p99, 1)} ms (target <= 20: ${verdict(h.p99 <= 20)})`);
  if (engine !== base) await engine.close();
  return results;
}

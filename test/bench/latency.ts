/**
 * Live latency as a streamer sees it, through the WebSocket to the server as `npm start` runs it (its own
 * process: model calls block a process's event loop, which would delay the clients' own clocks): each client
 * is a camera sending frames at 30 fps whatever the server does (latest-frame-wins drops what it cannot take)
 * and changing a setting every second. At 1 and 4 streams: glass to glass (client: a frame sent -> the output
 * that shows it received), the server's latency_ms and processing_ms, output fps, and live updates (sent ->
 * `updated`, and sent -> the first output of a frame sent after `updated`), all as p50 / p95.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams } from '../../pipelines/params.ts';
import { decodeImage, encodeImage } from '../../pipelines/codecs/image.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { fmt } from './stats.ts';

export interface LatencyBenchOptions {
  readonly engine: Engine;
  /** The model pack's folder (the server process loads it). */
  readonly pack: string;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** `npm start` on a free port in a child process; resolves with its URL once it listens. */
async function startServerProcess(pack: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', '--model', pack, '--max-streams', '16'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((ok, fail) => {
    child.once('exit', (code) => fail(new Error(`the server exited with ${code}`)));
    lines.on('line', (line) => {
      const url = /"msg":"listening".*"url":"([^"]+)"/.exec(line)?.[1];
      if (url) ok(url);
    });
  });
  return { url, child };
}

/** A webcam's rate. */
const CAMERA_FPS = 30;
const PARAMS = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', similarity_threshold: 1 } as const;
/** The settings a client alternates every second: an in-flight change (prompt) and a re-priming one (strength). */
const UPDATES = [{ prompt: 'a small yellow triangle at the top on a black background' }, { strength: 0.7 }, { prompt: PARAMS.prompt }, { strength: PARAMS.strength }];

function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))]!;
}

interface Samples {
  glass: number[];
  server: number[];
  processing: number[];
  updated: number[];
  applied: number[];
  outputs: number;
  skipped: number;
}

/**
 * One camera client for `seconds`: frames at CAMERA_FPS, an update every second. `alreadySent`: frames the
 * client sent before (the server's input ids count every binary message).
 */
async function camera(client: StreamClient, frames: readonly Buffer[], seconds: number, into: Samples, alreadySent: number): Promise<void> {
  const sentAt = new Map<number, number>();
  let sent = alreadySent;
  let update: { at: number; firstInput: number | undefined } | undefined;
  client.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const msg = JSON.parse(data.toString()) as Record<string, unknown>;
    const now = performance.now();
    if (msg['type'] === 'updated' && update) {
      into.updated.push(now - update.at);
      update.firstInput = sent + 1; // the first frame sent after `updated` runs with it
    } else if (msg['type'] === 'frame') {
      const input = msg['input_id'] as number;
      into.outputs++;
      if (msg['skipped']) into.skipped++;
      into.glass.push(now - sentAt.get(input)!);
      into.server.push(msg['latency_ms'] as number);
      into.processing.push(msg['processing_ms'] as number);
      if (update?.firstInput !== undefined && input >= update.firstInput) {
        into.applied.push(now - update.at);
        update = undefined;
      }
    }
  });
  const end = performance.now() + seconds * 1000;
  let next = performance.now();
  let updates = 0;
  let nextUpdate = performance.now() + 1000;
  while (performance.now() < end) {
    sentAt.set(++sent, performance.now());
    client.sendFrame(frames[sent % frames.length]!);
    if (performance.now() >= nextUpdate && !update) {
      update = { at: performance.now(), firstInput: undefined };
      client.send({ type: 'update', params: UPDATES[updates++ % UPDATES.length] });
      nextUpdate += 1000;
    }
    next += 1000 / CAMERA_FPS;
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
  }
}

export async function benchLatency({ engine, pack, quick, log }: LatencyBenchOptions): Promise<Record<string, unknown>> {
  const seconds = quick ? 8 : 20;
  const size = engine.pack.defaultImageSize;
  const frames = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => shapeFrame({ x: 24 + i * 10, size })));
  // the machine's state in this run: one frame in process (decode, pipeline, encode), as the server does it
  const pipeline = await StreamPipeline.create(engine, parseParams(PARAMS));
  const inProcess: number[] = [];
  for (let i = 0; i < (quick ? 40 : 100); i++) {
    const t0 = performance.now();
    const [r] = await pipeline.process([(await decodeImage(frames[i % frames.length]!, size, size)).data]);
    await encodeImage(r!.image, size, size, 'jpeg', 80);
    if (i >= 5) inProcess.push(performance.now() - t0);
  }
  const server = await startServerProcess(pack);
  log(`### Live latency through the WebSocket (cameras at ${CAMERA_FPS} fps, ${size} x ${size} JPEG, 2 steps, RCFG self, filter off, ${seconds} s)\n`);
  log('Each client sends frames at the camera rate whatever the server does (latest-frame-wins), acks every output, and sends an update every second (alternating a prompt, an in-flight change, and strength, which re-primes).\n');
  log(`In this run one frame takes ${fmt(quantile(inProcess, 0.5), 1)} ms (p95 ${fmt(quantile(inProcess, 0.95), 1)} ms) in process (decode, pipeline, JPEG encode), for the machine's load at the time.\n`);
  log('| streams | output fps per stream | glass to glass p50 / p95 | server latency_ms p50 / p95 | processing_ms p50 / p95 | update -> `updated` p50 / p95 | update -> first output with it p50 / p95 |');
  log('| --- | --- | --- | --- | --- | --- | --- |');
  const rows: Record<string, unknown>[] = [];
  for (const streams of [1, 4]) {
    const clients = await Promise.all(Array.from({ length: streams }, (_, i) => StreamClient.connect(server.url, { params: { ...PARAMS, seed: i } })));
    for (const c of clients) await c.roundTrip(frames[0]!); // priming outside the measurement
    const samples: Samples = { glass: [], server: [], processing: [], updated: [], applied: [], outputs: 0, skipped: 0 };
    await Promise.all(clients.map((c) => camera(c, frames, seconds, samples, 1)));
    await Promise.all(clients.map((c) => c.close()));
    const pair = (v: number[]) => `${fmt(quantile(v, 0.5), 1)} / ${fmt(quantile(v, 0.95), 1)} ms`;
    const fps = samples.outputs / seconds / streams;
    log(`| ${streams} | ${fmt(fps, 1)} | ${pair(samples.glass)} | ${pair(samples.server)} | ${pair(samples.processing)} | ${pair(samples.updated)} | ${pair(samples.applied)} |`);
    const q = (v: number[]) => ({ p50: quantile(v, 0.5), p95: quantile(v, 0.95), n: v.length });
    rows.push({ streams, fps_per_stream: fps, glass_to_glass_ms: q(samples.glass), latency_ms: q(samples.server), processing_ms: q(samples.processing), update_to_updated_ms: q(samples.updated), update_to_first_output_ms: q(samples.applied) });
  }
  log('\nGlass to glass is what a viewer waits for: it includes the pipeline lag (with 2 steps an output shows the frame before the latest, one frame interval), the wait in the input slot and the network. latency_ms is the server\'s part of it; processing_ms the work on the call that made the output. The server runs as `npm start` does, in its own process.');
  server.child.kill('SIGTERM');
  await new Promise((ok) => server.child.once('exit', ok));
  return { camera_fps: CAMERA_FPS, seconds, in_process_frame_ms: { p50: quantile(inProcess, 0.5), p95: quantile(inProcess, 0.95) }, rows };
}

/**
 * Server benchmarks over loopback WebSockets: end-to-end fps against the in-process pipeline at the same
 * settings, aggregate fps for 1-8 concurrent streams with and without cross-stream batching, frame latency.
 */
import { startServer, type RunningServer } from '../../server/app.ts';
import type { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams } from '../../pipelines/params.ts';
import { decodeImage, encodeImage } from '../../pipelines/codecs/image.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { summarize, fmt } from './stats.ts';

export interface ServerBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const PARAMS = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', similarity_threshold: 1 } as const;

/**
 * Each stream keeps two frames in flight, as a camera does (it never waits for an output before the next
 * frame): a new frame goes out whenever an output arrives. Counts outputs for `seconds`.
 */
async function runStreams(server: RunningServer, streams: number, seconds: number, frames: Buffer[]): Promise<{ fps: number; latencies: number[] }> {
  const clients = await Promise.all(Array.from({ length: streams }, (_, i) => StreamClient.connect(server.url, { params: { ...PARAMS, seed: i }, window: 2 })));
  for (const c of clients) await c.roundTrip(frames[0]!); // priming outside the window
  const latencies: number[] = [];
  let outputs = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    clients.map(async (c, i) => {
      let k = i;
      c.sendFrame(frames[k++ % frames.length]!);
      while (performance.now() < end) {
        const before = c.frames.length;
        c.sendFrame(frames[k++ % frames.length]!);
        await c.until(() => c.frames.length > before, 30_000);
        latencies.push(c.frames[c.frames.length - 1]!.meta.latency_ms);
        outputs++;
      }
    }),
  );
  await Promise.all(clients.map((c) => c.close()));
  return { fps: outputs / seconds, latencies };
}

export async function benchServer({ engine, quick, log }: ServerBenchOptions): Promise<Record<string, unknown>> {
  const seconds = quick ? 4 : 12;
  const size = engine.pack.defaultImageSize;
  const frames = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => shapeFrame({ x: 24 + i * 10, size })));
  const results: Record<string, unknown> = {};

  // 1. in-process pipeline (decode + pipeline + encode, as the server does) vs over the WebSocket
  const pipeline = await StreamPipeline.create(engine, parseParams(PARAMS));
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const img = await decodeImage(frames[n++ % frames.length]!, size, size);
    const [r] = await pipeline.process([img.data]);
    await encodeImage(r!.image, size, size, 'jpeg', 80);
  }
  const inProcessFps = n / ((performance.now() - t0) / 1000);
  const batched = await startServer({ port: 0, maxBatchRows: 16, maxStreams: 16, maxStreamsPerClient: 16 }, { engine });
  const single = await runStreams(batched, 1, seconds, frames);
  log('### End to end: WebSocket vs in-process (1 stream, 2 steps, RCFG self, JPEG in and out)\n');
  log(`In process ${fmt(inProcessFps, 1)} fps; over a loopback WebSocket ${fmt(single.fps, 1)} fps: ${fmt(single.fps / inProcessFps)} of in-process (goal 0.9).`);
  results['websocket_vs_in_process'] = { in_process_fps: inProcessFps, websocket_fps: single.fps, ratio: single.fps / inProcessFps };

  // 2. concurrent streams, with and without cross-stream batching (same engine, two servers)
  const unbatched = await startServer({ port: 0, maxBatchRows: 1, maxStreams: 16, maxStreamsPerClient: 16 }, { engine });
  log('\n### Concurrent streams: aggregate fps and frame latency (two frames in flight per stream)\n');
  log('| streams | batching | aggregate fps | per stream fps | latency p50 | latency p99 |');
  log('| --- | --- | --- | --- | --- | --- |');
  const concurrency: Record<string, unknown>[] = [];
  for (const streams of [1, 2, 4, 8]) {
    for (const [label, server] of [['off', unbatched], ['on', batched]] as const) {
      const r = await runStreams(server, streams, seconds, frames);
      const lat = summarize(r.latencies);
      const p99 = [...r.latencies].sort((a, b) => a - b)[Math.floor(0.99 * (r.latencies.length - 1))] ?? NaN;
      concurrency.push({ streams, batching: label, fps: r.fps, latency_p50_ms: lat.median, latency_p99_ms: p99 });
      log(`| ${streams} | ${label} | ${fmt(r.fps, 1)} | ${fmt(r.fps / streams, 1)} | ${fmt(lat.median, 1)} ms | ${fmt(p99, 1)} ms |`);
    }
  }
  results['concurrency'] = concurrency;
  log('\nLatency is from the arrival of the input frame shown to the send of its output; with 2 steps an output shows the frame before the latest, so it spans two frame times.');
  await Promise.all([batched.close(), unbatched.close()]);
  return results;
}

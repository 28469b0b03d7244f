/**
 * Soak: 8 streams plus a stream of batch jobs on one server for a bounded time (2 minutes; 30 s with --quick),
 * sampled every 5 s: fps, memory, UNet queue depth, job progress. Passes when nothing crashed, memory and
 * queues stay bounded and fps stays steady.
 */
import { startServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { createLogger } from '../../server/log.ts';
import type { Engine } from '../../pipelines/engine.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { fmt } from './stats.ts';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SoakOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const STREAMS = 8;
const SAMPLE_MS = 5000;

export async function benchSoak({ engine, quick, log }: SoakOptions): Promise<Record<string, unknown>> {
  const seconds = quick ? 30 : 120;
  const dataDir = await mkdtemp(join(tmpdir(), 'soak-'));
  const server = await startServer({ port: 0, dataDir, maxStreams: 16, maxStreamsPerClient: 16, rateLimitPerMinute: 0 }, { engine, log: createLogger({}, 'warn'), extensions: [(ctx) => createBatchApi(ctx)] }); // a log line per request (pino-http, info) would fill the bench's output
  const size = engine.pack.defaultImageSize;
  const frames = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => shapeFrame({ x: 24 + i * 14, size })));
  const clients = await Promise.all(Array.from({ length: STREAMS }, (_, i) => StreamClient.connect(server.url, { params: { prompt: 'a large red circle in the centre on a blue background', steps: 2, seed: i, similarity_threshold: 1 } })));
  const end = performance.now() + seconds * 1000;
  let jobsDone = 0;
  let jobsFailed = 0;
  const samples: { t: number; fps: number; rssMb: number; heapMb: number; queue: number }[] = [];
  let outputs = 0;

  const streaming = clients.map(async (c, i) => {
    let k = i;
    while (performance.now() < end) {
      const before = c.frames.length;
      c.sendFrame(frames[k++ % frames.length]!);
      await c.until(() => c.frames.length > before || c.errors.length > 0, 60_000);
      outputs++;
      if (c.frames.length > 200) c.frames.splice(0, 100); // the client keeps only recent frames
    }
  });
  const jobs = (async () => {
    while (performance.now() < end) {
      const res = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'images', count: 4, prompt: 'a small green square at the top on a white background', steps: 2 }) });
      const job = (await res.json()) as { id: string };
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        const status = ((await (await fetch(`${server.url}/v1/jobs/${job.id}`)).json()) as { status: string }).status;
        if (status === 'succeeded') jobsDone++;
        if (status === 'failed' || status === 'canceled') jobsFailed++;
        if (status === 'succeeded' || status === 'failed' || status === 'canceled') break;
      }
    }
  })();
  let lastOutputs = 0;
  const start = performance.now();
  const sampler = setInterval(() => {
    const mem = process.memoryUsage();
    samples.push({ t: (performance.now() - start) / 1000, fps: (outputs - lastOutputs) / (SAMPLE_MS / 1000), rssMb: mem.rss / 2 ** 20, heapMb: mem.heapUsed / 2 ** 20, queue: server.ctx.batcher.waiting });
    lastOutputs = outputs;
  }, SAMPLE_MS);
  await Promise.all([...streaming, jobs]);
  clearInterval(sampler);
  const errors = clients.reduce((n, c) => n + c.errors.length, 0);
  await Promise.all(clients.map((c) => c.close()));
  await server.close();

  const steady = samples.slice(1); // the first sample includes warm-up
  const fpsValues = steady.map((s) => s.fps);
  const meanFps = fpsValues.reduce((a, b) => a + b, 0) / Math.max(1, fpsValues.length);
  const rssGrowth = steady.length > 1 ? steady[steady.length - 1]!.rssMb - steady[0]!.rssMb : 0;
  const maxQueue = Math.max(0, ...samples.map((s) => s.queue));
  log(`### Soak: ${STREAMS} streams + image jobs for ${seconds} s (2 steps, one server)\n`);
  log('| t (s) | aggregate fps | RSS MB | heap MB | UNet queue |');
  log('| --- | --- | --- | --- | --- |');
  for (const s of samples) log(`| ${fmt(s.t, 0)} | ${fmt(s.fps, 1)} | ${fmt(s.rssMb, 0)} | ${fmt(s.heapMb, 0)} | ${s.queue} |`);
  log(`\nMean ${fmt(meanFps, 1)} fps (min ${fmt(Math.min(...fpsValues), 1)}, max ${fmt(Math.max(...fpsValues), 1)}); RSS growth after warm-up ${fmt(rssGrowth, 0)} MB; max UNet queue ${maxQueue} (at most one request per stream and job); ${jobsDone} jobs done, ${jobsFailed} failed; ${errors} stream errors; no crash.`);
  return { seconds, streams: STREAMS, samples, mean_fps: meanFps, rss_growth_mb: rssGrowth, max_queue: maxQueue, jobs_done: jobsDone, jobs_failed: jobsFailed, stream_errors: errors };
}

/**
 * One full-size pack measured in its own process (so peak RSS is this pack's): load time, RSS, seconds per
 * 512x512 frame through a real WebSocket stream and a batch render, and /health latency while frames run.
 * CPU seconds are reported beside wall seconds: on a shared machine the wall time includes other processes' turns,
 * while CPU time / 2 (two intra-op threads) is what a frame costs an otherwise idle 2-core machine.
 * `tsx test/bench/family-child.ts <pack dir> <frames>` prints one JSON line.
 */
import { performance } from 'node:perf_hooks';
import { DEFAULT_PACK_OPTIONS } from '../../models/pack.ts';
import { Engine } from '../../pipelines/engine.ts';
import { startServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { createLogger } from '../../server/log.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { summarize } from './stats.ts';

const [dir, framesArg] = process.argv.slice(2);
const frames = Number(framesArg ?? 2);
const SIDE = 512;
/** A full-size frame takes seconds to minutes on 2 shared cores. */
const PATIENCE_MS = 30 * 60_000;
const mib = (bytes: number) => bytes / 2 ** 20;
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const peakMib = () => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB
const started = performance.now();
/** Progress on stderr (the parent shows the last lines when the child fails or is stopped). */
const progress = (what: string) => console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s, ${cpuSeconds().toFixed(0)} CPU s] ${what}`);

/**
 * Polls /health every 20 ms until stopped; returns each request's latency (ms). Each request opens its own
 * connection: while a model blocks the event loop, a kept-alive socket can be closed by the server's idle timer
 * just as the next request is written (ECONNRESET), which would measure the race, not the service.
 */
function pollHealth(url: string): { stop: () => Promise<number[]> } {
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      await fetch(`${url}/health`, { headers: { connection: 'close' } }).then((r) => r.arrayBuffer());
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return latencies;
    },
  };
}

// 1. load
const t0 = performance.now();
const c0 = cpuSeconds();
const engine = await Engine.load(dir!, { ...DEFAULT_PACK_OPTIONS, threads: 2 });
const loadSeconds = (performance.now() - t0) / 1000;
const loadCpuSeconds = cpuSeconds() - c0;
const rssAfterLoad = mib(process.memoryUsage().rss);
progress(`loaded ${engine.pack.name}`);
const server = await startServer({ port: 0, dataDir: `/tmp/family-bench-${process.pid}` }, { engine, log: createLogger({}, 'error'), extensions: [(ctx) => createBatchApi(ctx)] });

// 2. a stream: 1-step img2img frames at 512x512 (the family's usual size), /health polled meanwhile
const params = { prompt: 'a watercolour painting of a harbour at sunset', width: SIDE, height: SIDE, steps: 1, strength: 0.5, guidance: 'none', similarity_threshold: 1, seed: 1 };
const client = await StreamClient.connect(server.url, { params }, { timeoutMs: PATIENCE_MS });
progress('stream started');
const frame = await shapeFrame({ size: SIDE, x: SIDE / 2 });
const health = pollHealth(server.url);
const frameSeconds: number[] = [];
const frameCpu: number[] = [];
for (let i = 0; i < frames; i++) {
  const t = performance.now();
  const c = cpuSeconds();
  await client.roundTrip(frame, PATIENCE_MS);
  frameSeconds.push((performance.now() - t) / 1000);
  frameCpu.push(cpuSeconds() - c);
  progress(`frame ${i + 1} of ${frames}`);
}
const healthMs = await health.stop();
const rssOneStream = mib(process.memoryUsage().rss);
// 3. a second stream on the same server: it shares the sessions (no second copy of the weights)
const second = await StreamClient.connect(server.url, { params: { ...params, prompt: 'a pencil sketch of a cat', seed: 2 } }, { timeoutMs: PATIENCE_MS });
await second.roundTrip(frame, PATIENCE_MS);
const rssTwoStreams = mib(process.memoryUsage().rss);
progress('second stream');
await Promise.all([client.close(), second.close()]);
// 4. a batch render (A1111 txt2img, 1 step)
const tb = performance.now();
const res = await fetch(`${server.url}/sdapi/v1/txt2img`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', connection: 'close' },
  body: JSON.stringify({ prompt: 'a red bicycle', width: SIDE, height: SIDE, steps: 1, seed: 3 }),
});
if (res.status !== 200) throw new Error(`txt2img: ${res.status} ${await res.text()}`);
const batchSeconds = (performance.now() - tb) / 1000;
await server.close();

const steady = summarize(frameSeconds.slice(1).length > 0 ? frameSeconds.slice(1) : frameSeconds);
const h = summarize(healthMs);
console.log(
  JSON.stringify({
    pack: engine.pack.name,
    kind: engine.pack.kind.name,
    fp16: engine.pack.unet.model.input('sample')!.dtype === 'float16',
    load_seconds: loadSeconds,
    load_cpu_seconds: loadCpuSeconds,
    rss_after_load_mib: rssAfterLoad,
    rss_one_stream_mib: rssOneStream,
    rss_two_streams_mib: rssTwoStreams,
    peak_rss_mib: peakMib(),
    first_frame_seconds: frameSeconds[0],
    frame_seconds: steady.median,
    frame_cpu_seconds: summarize(frameCpu.slice(1).length > 0 ? frameCpu.slice(1) : frameCpu).median,
    batch_txt2img_seconds: batchSeconds,
    health_ms_p50: h.median,
    health_ms_max: Math.max(...healthMs),
    health_requests: healthMs.length,
  }),
);
process.exit(0);

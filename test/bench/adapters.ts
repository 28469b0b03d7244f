/**
 * Adapter benchmark: merge + session build time, and a live stream kept busy (frames back to back, the
 * similarity filter off) through an adapter swap. The swap is requested mid-stream the way the service does it
 * (StreamPipeline.update with new adapters): the merged UNet and the text encoder with the adapters' concept
 * tokens are built on a worker thread and the prompt is re-encoded while the stream keeps running on the old
 * UNet and prompt; both switch between two frames. Reports the median frame interval before the swap and the
 * longest gap between frames from the request to the end (goal: at most two intervals), plus what a build on
 * the main thread would have stalled.
 *   npx tsx test/bench/adapters.ts [--pack DIR] [--adapters diamond,heart,ring] [--frames 120] [--threads 1] [--fps 30]
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { indexOnnxModel } from '../../models/adapters/onnx-graph.ts';
import { mergeAdapters } from '../../models/adapters/merge.ts';
import { AdapterStore } from '../../models/adapters/store.ts';
import type { AdapterChoice } from '../../models/adapters/choices.ts';
import { readKohyaAdapter } from '../../models/adapters/kohya.ts';
import { parseSafetensors } from '../../models/adapters/safetensors.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { OnnxModel } from '../../models/runtime/onnx.ts';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { readFile } from 'node:fs/promises';

export interface AdapterBenchOptions {
  readonly pack?: string;
  readonly adapters?: readonly string[];
  /** Frames streamed in all (the swap is requested after a quarter of them). */
  readonly frames?: number;
  /** Intra-op threads per session (1 leaves the second core to the build). */
  readonly threads?: number;
  readonly prompt?: string;
  /** Input clock of the paced run, ms per frame (default 30 fps). */
  readonly paceMs?: number;
}

/** One stream through a swap. */
export interface SwapRun {
  /** Input clock, ms per frame; undefined when frames run back to back. */
  readonly paceMs: number | undefined;
  readonly frames: number;
  /** The frame interval the gap is compared with: paceMs, or the median time per frame when saturated. */
  readonly frameIntervalMs: number;
  /** Median time between output frames before the swap request, ms. */
  readonly processingMs: number;
  /** Longest time between two output frames from the swap request to the end, ms, and in frame intervals. */
  readonly maxGapMs: number;
  readonly maxGapIntervals: number;
  readonly swapRequestedAtFrame: number;
  /** Frame index at which the stream switched to the merged UNet; frames produced while it was building. */
  readonly swappedAtFrame: number;
  readonly framesWhileBuilding: number;
  /** Request to merged UNet ready (merge + worker build under the stream's load), ms. */
  readonly swapReadyMs: number;
  /** Median time between output frames after the swap (merged UNet on its worker), ms. */
  readonly mergedProcessingMs: number;
}

export interface AdapterBenchResult {
  readonly pack: string;
  readonly adapters: readonly string[];
  /** Cold merged() with the machine otherwise idle: merging the weights, building the session on its worker, ms. */
  readonly mergeMs: number;
  readonly buildMs: number;
  /** The same session built on the main thread (what a stream would stall without the worker), ms. */
  readonly mainThreadBuildMs: number;
  /** Frames back to back (CPU saturated by the stream) and frames on a camera clock. */
  readonly saturated: SwapRun;
  readonly paced: SwapRun;
}

/** The camera clock of the paced run: 30 frames per second. */
const DEFAULT_PACE_MS = 1000 / 30;

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** A red square drifting across a blue frame, [3, H, W] in [-1, 1]. */
function movingFrame(k: number, width: number, height: number): Float32Array {
  const out = new Float32Array(3 * width * height);
  const cx = (0.3 + 0.4 * ((k % 60) / 60)) * width;
  const cy = 0.5 * height;
  const r = 0.15 * width;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inside = Math.abs(x - cx) < r && Math.abs(y - cy) < r;
      const p = y * width + x;
      out[p] = inside ? 0.73 : -0.76;
      out[width * height + p] = inside ? -0.76 : -0.53;
      out[2 * width * height + p] = inside ? -0.76 : 0.8;
    }
  }
  return out;
}

export async function benchAdapters(options: AdapterBenchOptions = {}): Promise<AdapterBenchResult> {
  const pack = options.pack ?? EMBEDDED_PACK_DIR;
  const names = options.adapters ?? ['diamond', 'heart', 'ring'];
  const threads = options.threads ?? 1;
  const total = options.frames ?? 120;
  const unetPath = join(pack, 'unet', 'model.onnx');
  // 1. cold merge + build (weight 1), and the same build on the main thread for comparison
  const engine = await Engine.load(pack, { provider: 'cpu', threads });
  const store = new AdapterStore(join(pack, 'adapters'), { unet: unetPath, textEncoder: join(pack, 'text_encoder', 'model.onnx') }, engine.pack.sessions);
  const choice = (weight: number): AdapterChoice[] => names.map((name) => ({ name, weight }));
  const cold = await store.merged(choice(1));
  const baseBytes = new Uint8Array(await readFile(unetPath));
  const weighted = await Promise.all(
    names.map(async (name) => ({ name, weight: 1, adapter: readKohyaAdapter(parseSafetensors(await readFile(join(pack, 'adapters', `${name}.safetensors`)), name), name) })),
  );
  const merged = await mergeAdapters(baseBytes, indexOnnxModel(baseBytes), weighted);
  const t0 = performance.now();
  const mainThreadModel = await OnnxModel.load(merged.bytes, { provider: 'cpu', threads, label: 'main-thread build' });
  const mainThreadBuildMs = performance.now() - t0;
  await mainThreadModel.release();
  // 2. streams that swap to a new combination mid-way (weights not cached yet: a real merge + build each time)
  const saturated = await streamThroughSwap(engine, store, choice(0.9), total, undefined, options.prompt);
  const paced = await streamThroughSwap(engine, store, choice(0.8), total, options.paceMs ?? DEFAULT_PACE_MS, options.prompt);
  return { pack, adapters: names, mergeMs: cold.mergeMs, buildMs: cold.buildMs, mainThreadBuildMs, saturated, paced };
}

/**
 * One stream of `total` frames; the swap is requested after a quarter of them. With `paceMs` frames arrive
 * on that clock (a camera); without, back to back (the CPU saturated by the stream).
 */
async function streamThroughSwap(engine: Engine, store: AdapterStore, adapters: AdapterChoice[], total: number, paceMs: number | undefined, prompt?: string): Promise<SwapRun> {
  const params = parseParams({ prompt: prompt ?? 'a large red diamond in the centre on a blue background', steps: 2, strength: 0.5, similarity_threshold: 1, guidance: 'self', seed: 1 });
  engine.attach({ adapters: store });
  const stream = await StreamPipeline.create(engine, params);
  const { width, height } = stream.frameSize;
  const swapRequestedAtFrame = Math.floor(total / 4);
  let swappedAtFrame = -1;
  let requestedAt = 0;
  let readyMs = 0;
  let failed: unknown;
  const times: number[] = [];
  const start = performance.now();
  for (let k = 0; k < total; k++) {
    if (paceMs !== undefined) {
      const wait = start + k * paceMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    if (k === swapRequestedAtFrame) {
      requestedAt = performance.now();
      stream.update({ adapters }).then(
        () => (readyMs = performance.now() - requestedAt),
        (e: unknown) => (failed = e),
      );
    }
    if (swappedAtFrame < 0 && stream.variant.adapters.length > 0) swappedAtFrame = k; // this frame runs on the merged UNet
    await stream.process([movingFrame(k, width, height)], k);
    times.push(performance.now());
    if (failed) throw failed;
  }
  if (swappedAtFrame < 0) throw new Error(`the merged UNet was not ready after ${total - swapRequestedAtFrame} frames; stream more frames`);
  if (process.env['BENCH_DEBUG']) console.error(times.slice(1).map((t, i) => (t - times[i]!).toFixed(0)).join(' '));
  // 3. gaps between output frames
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  const before = gaps.slice(1, swapRequestedAtFrame - 1); // the first frame primes the buffer
  const frameIntervalMs = paceMs ?? median(before);
  const maxGapMs = Math.max(...gaps.slice(swapRequestedAtFrame - 1));
  return {
    paceMs,
    frames: total,
    frameIntervalMs,
    processingMs: median(before),
    maxGapMs,
    maxGapIntervals: maxGapMs / frameIntervalMs,
    swapRequestedAtFrame,
    swappedAtFrame,
    framesWhileBuilding: swappedAtFrame - swapRequestedAtFrame,
    swapReadyMs: readyMs,
    mergedProcessingMs: median(gaps.slice(swappedAtFrame)),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { pack: { type: 'string' }, adapters: { type: 'string' }, frames: { type: 'string' }, threads: { type: 'string' }, fps: { type: 'string' } },
  });
  const result = await benchAdapters({
    ...(values.pack ? { pack: values.pack } : {}),
    ...(values.adapters ? { adapters: values.adapters.split(',') } : {}),
    ...(values.frames ? { frames: Number(values.frames) } : {}),
    ...(values.threads ? { threads: Number(values.threads) } : {}),
    ...(values.fps ? { paceMs: 1000 / Number(values.fps) } : {}),
  });
  console.log(JSON.stringify(result, null, 2));
}

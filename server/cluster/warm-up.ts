/**
 * A worker's first frames run much slower than the next (onnxruntime allocates and tunes on a session's first
 * runs): a stream moved onto a fresh worker would wait for that. So a worker runs a few stream frames at the
 * pack's default size before it registers: measured on this project, a moved stream's first output on a fresh
 * worker took ~1 s without this, ~0.2 s with it.
 */
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';

/** Frames run: the first primes the stream batch, the rest run it as a stream does. */
const FRAMES = 3;

export async function warmUp(ctx: AppContext): Promise<void> {
  const params = parseParams({ prompt: 'warm-up', similarity_threshold: 1 });
  const pipeline = await StreamPipeline.create(ctx.engine, params, ctx.runners);
  const { width, height } = pipeline.frameSize;
  const frame = new Float32Array(3 * width * height); // a grey frame
  for (let i = 0; i < FRAMES; i++) await pipeline.process([frame]);
}

/**
 * Batch flows: txt2img and img2img for whole images (not streams). Every image runs the sequential
 * denoise; images of one request share UNet calls as lanes of one batch. Image j uses seed + j.
 */
import type { Engine, Size } from './engine.ts';
import { denoiseSequential } from './sequential.ts';
import { makeGuidance } from './rcfg.ts';
import type { GenerationParams } from './params.ts';
import type { UnetRunner } from './denoise-step.ts';
import type { RunnerFactory } from './stream-pipeline.ts';
import type { UnetVariant } from './variants.ts';

export interface GeneratedImage {
  /** [3, H, W] in [-1, 1] */
  readonly data: Float32Array;
  readonly width: number;
  readonly height: number;
  readonly seed: number;
  /** The UNet that made it (expert, adapters). */
  readonly variant: UnetVariant;
  /** What the caller should know (a prompt cut at CLIP's 77 tokens, adapter keys skipped). */
  readonly warnings: readonly string[];
}

export interface GenerateOptions {
  /** Called after each finished image: done, total. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Makes the UNet runner for the chosen variant (the server's batcher); default: the engine directly. */
  readonly runners?: RunnerFactory;
  /** A fixed runner (tests, benchmarks); wins over `runners`. */
  readonly runUnet?: UnetRunner;
  /** Images run together as lanes of one UNet batch. */
  readonly lanesPerCall?: number;
  readonly signal?: AbortSignal;
}

function firstSeed(params: GenerationParams): number {
  return typeof params.seed === 'number' ? params.seed : params.seed[0]!.seed;
}

async function run(
  engine: Engine,
  params: GenerationParams,
  count: number,
  mode: 'txt2img' | 'img2img',
  latentsFor: (size: Size, index: number) => Promise<Float32Array>,
  options: GenerateOptions,
): Promise<GeneratedImage[]> {
  const size = engine.size(params);
  const c = engine.coefficients(params, mode);
  const g = makeGuidance(params.guidance, params.guidance_scale, params.delta);
  const { prompt, variant } = await engine.prepare(params);
  const warnings = [...prompt.warnings, ...variant.warnings];
  const runUnet = options.runUnet ?? (options.runners ?? ((s, v) => engine.unetRunner(s, v)))(size, variant);
  const lanes = Math.max(1, options.lanesPerCall ?? 4);
  const out: GeneratedImage[] = [];
  for (let start = 0; start < count; start += lanes) {
    options.signal?.throwIfAborted();
    const n = Math.min(lanes, count - start);
    const shifted = typeof params.seed === 'number' ? params.seed + start : params.seed.map((s) => ({ ...s, seed: s.seed + start }));
    const noise = engine.noise({ seed: shifted }, c.timesteps.length, n, size, true);
    const latents = await Promise.all(Array.from({ length: n }, (_, j) => latentsFor(size, start + j)));
    const denoised = await denoiseSequential(latents, c, g, prompt, noise, runUnet);
    const images = await engine.decodeLatents(denoised, size);
    images.forEach((data, j) => out.push({ data, width: size.width, height: size.height, seed: (firstSeed(params) + start + j) % 2 ** 32, variant, warnings }));
    options.onProgress?.(out.length, count);
  }
  return out;
}

/** Text to image: `count` images from pure noise at strength 1. */
export function txt2img(engine: Engine, params: GenerationParams, count = 1, options: GenerateOptions = {}): Promise<GeneratedImage[]> {
  return run(engine, params, count, 'txt2img', async (size) => new Float32Array(engine.latentSize(size)), options);
}

/** Image to image: each image [3, H, W] at the params' size is encoded, noised to the strength and denoised. */
export async function img2img(
  engine: Engine,
  params: GenerationParams,
  images: readonly Float32Array[],
  options: GenerateOptions = {},
): Promise<GeneratedImage[]> {
  const size = engine.size(params);
  const latents = await engine.encodeImages(images, size);
  return run(engine, params, images.length, 'img2img', async (_, i) => latents[i]!, options);
}

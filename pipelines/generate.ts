/**
 * Batch flows: txt2img and img2img for whole images (not streams). Every image runs the sequential
 * denoise; images of one request share UNet calls as lanes of one batch. Image j uses seed + j.
 */
import { resizeImage } from './codecs/image.ts';
import { withUrgency } from '../models/runtime/urgency.ts';
import type { Engine } from './engine.ts';
import { denoiseSequential } from './sequential.ts';
import type { GenerationParams } from './params.ts';
import { planRequest, type Plan, type RunnerFactory } from './plan.ts';
import type { UnetVariant } from './variants.ts';

/** Images per UNet call: 4 lanes keep a call small enough that streams sharing the UNet wait little. */
export const DEFAULT_LANES = 4;

export interface GeneratedImage {
  /** [3, H, W] in [-1, 1] */
  readonly data: Float32Array;
  readonly width: number;
  readonly height: number;
  readonly seed: number;
  /** Its index in the request: it was drawn from seed + index (each seed of a blend shifted by index). */
  readonly index: number;
  /** The UNet that made it (expert, adapters). */
  readonly variant: UnetVariant;
}

export interface GenerateOptions {
  /** Called after each finished group of lanes: images done, images in all. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Images run together as lanes of one UNet batch. */
  readonly lanesPerCall?: number;
  /** The first image's index in its request (a job resuming at image 8 renders seeds seed + 8 ...). */
  readonly firstIndex?: number;
  readonly signal?: AbortSignal;
}

function firstSeed(params: GenerationParams): number {
  return typeof params.seed === 'number' ? params.seed : params.seed[0]!.seed;
}

/**
 * Renders `count` images of a plan: from noise (txt2img), or from encoded images (img2img: image j starts from
 * inits[j % inits.length], [3, H, W] at the plan's size). Every model call carries the plan's class.
 */
export function render(engine: Engine, plan: Plan, count: number, options: GenerateOptions & { inits?: readonly Float32Array[] } = {}): Promise<GeneratedImage[]> {
  return withUrgency({ class: plan.urgency }, () => renderPlan(engine, plan, count, options));
}

async function renderPlan(engine: Engine, plan: Plan, count: number, options: GenerateOptions & { inits?: readonly Float32Array[] }): Promise<GeneratedImage[]> {
  const { params, size, outputSize: out, coefficients: c, guidance: g, prompt, variant, runner, vae } = plan;
  const resized = out.width !== size.width || out.height !== size.height;
  const inits = options.inits && (await engine.encodeImages(options.inits, size, vae));
  const lanes = Math.max(1, options.lanesPerCall ?? DEFAULT_LANES);
  const first = options.firstIndex ?? 0;
  const done: GeneratedImage[] = [];
  for (let start = 0; start < count; start += lanes) {
    options.signal?.throwIfAborted();
    const n = Math.min(lanes, count - start);
    const offset = first + start;
    const shifted = typeof params.seed === 'number' ? params.seed + offset : params.seed.map((s) => ({ ...s, seed: s.seed + offset }));
    const noise = engine.noise({ seed: shifted }, c.timesteps.length, n, size, true);
    const latents = Array.from({ length: n }, (_, j) => (inits ? inits[(start + j) % inits.length]! : new Float32Array(engine.latentSize(size))));
    const denoised = await denoiseSequential(latents, c, g, prompt, noise, runner);
    // background work is decoded an image per call, so it holds the decoder's worker a short while at a time
    const decoded = plan.urgency === 'background' ? await decodeOneByOne(engine, denoised, plan) : await engine.decodeLatents(denoised, size, vae);
    const images = resized ? await Promise.all(decoded.map((d) => resizeImage(d, size, out.width, out.height))) : decoded;
    images.forEach((data, j) => done.push({ data, width: out.width, height: out.height, seed: (firstSeed(params) + offset + j) % 2 ** 32, index: offset + j, variant }));
    options.onProgress?.(done.length, count);
  }
  return done;
}

async function decodeOneByOne(engine: Engine, latents: readonly Float32Array[], plan: Plan): Promise<Float32Array[]> {
  const images: Float32Array[] = [];
  for (const z of latents) images.push(...(await engine.decodeLatents([z], plan.size, plan.vae)));
  return images;
}

/** Text to image: `count` images from pure noise at strength 1. */
export async function txt2img(engine: Engine, params: GenerationParams, count = 1, options: GenerateOptions & { runners?: RunnerFactory } = {}): Promise<GeneratedImage[]> {
  const plan = await planRequest(engine, params, 'txt2img', options.runners);
  try {
    return await render(engine, plan, count, options);
  } finally {
    plan.release();
  }
}

/** Image to image: each image [3, H, W] at the params' size is encoded, noised to the strength and denoised. */
export async function img2img(
  engine: Engine,
  params: GenerationParams,
  images: readonly Float32Array[],
  options: GenerateOptions & { runners?: RunnerFactory } = {},
): Promise<GeneratedImage[]> {
  const plan = await planRequest(engine, params, 'img2img', options.runners);
  try {
    return await render(engine, plan, images.length, { ...options, inits: images });
  } finally {
    plan.release();
  }
}

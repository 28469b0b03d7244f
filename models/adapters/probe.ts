/**
 * The check a merged UNet passes before any request uses it: one probe row (seeded noise latents at a mid-grid
 * timestep, a seeded prompt context) runs through the base UNet and the merged one. The merged output must be
 * finite, and its spread (standard deviation) within PROBE_SPREAD of the base output's: an output that has
 * collapsed to a constant, or grown by orders of magnitude, renders black or noise images for everyone.
 * The adapters trained here move the spread by 0.9-1.2x at weight 1 and 0.8-1.6x at +-2 (the largest weight a
 * request may ask for); the bounds leave an order of magnitude either way.
 */
import type { Unet, UnetRow } from '../components.ts';
import { ServiceError } from '../errors.ts';

/** Allowed std(merged output) / std(base output). */
export const PROBE_SPREAD = Object.freeze({ min: 0.05, max: 20 });
/** A timestep in the middle of SD's 1000-step training grid. */
const PROBE_TIMESTEP = 499;
/** CLIP's context length. */
const CONTEXT_TOKENS = 77;

export interface ProbeInput {
  readonly rows: readonly UnetRow[];
  readonly latentHeight: number;
  readonly latentWidth: number;
}

/**
 * mulberry32 as uniform values with zero mean and unit variance: the probe must be the same for the base and
 * every merge, and models/ cannot use the pipelines' generator (layers); normal values are not needed for a probe.
 */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) - 0.5) * Math.sqrt(12);
  };
}

/** The probe row for a UNet's contract at a latent size (a multiple the UNet accepts). */
export function probeInput(unet: Unet, latentHeight: number, latentWidth: number): ProbeInput {
  const hidden = unet.model.input('encoder_hidden_states')?.dims[2];
  const width = typeof hidden === 'number' && hidden > 0 ? hidden : 768;
  const next = seeded(20241130);
  const sample = Float32Array.from({ length: unet.latentChannels * latentHeight * latentWidth }, next);
  const context = Float32Array.from({ length: CONTEXT_TOKENS * width }, next);
  return { rows: [{ sample, timestep: PROBE_TIMESTEP, context }], latentHeight, latentWidth };
}

/** Standard deviation of the values, NaN when any is not finite. */
export function spread(values: Float32Array): number {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return Math.sqrt(sq / values.length);
}

/** Runs the probe on `unet`: the spread of its output (NaN when the output is not finite). */
export async function probeSpread(unet: Unet, input: ProbeInput): Promise<number> {
  const [eps] = await unet.predict(input.rows, input.latentHeight, input.latentWidth);
  return eps ? spread(eps) : Number.NaN;
}

/** Throws model_invalid when a merged UNet's probe spread is not finite or outside PROBE_SPREAD of the base's. */
export function checkProbe(merged: number, base: number, label: string): void {
  const ratio = merged / base;
  if (!Number.isFinite(merged)) throw new ServiceError('model_invalid', `${label}: the merged UNet's output is not finite on the probe input: these adapters break the model`);
  if (!(ratio >= PROBE_SPREAD.min && ratio <= PROBE_SPREAD.max)) {
    const what = ratio < PROBE_SPREAD.min ? 'collapsed' : 'blown up';
    throw new ServiceError(
      'model_invalid',
      `${label}: the merged UNet's output has ${what} on the probe input (spread ${ratio.toPrecision(3)} x the base model's, allowed ${PROBE_SPREAD.min}-${PROBE_SPREAD.max}): these adapters break the model`,
    );
  }
}

/**
 * The check a merged UNet passes before any request uses it: one probe row (seeded noise latents at a mid-grid
 * timestep, a seeded prompt context) runs through the base UNet and the merged one. The merged prediction must be
 *  - finite;
 *  - not collapsed or blown up: its spread (standard deviation) within PROBE_SPREAD of the base prediction's;
 *  - still a noise prediction: cosine similarity with the base prediction at least PROBE_MIN_AGREEMENT. An adapter
 *    steers what is drawn; one that makes the UNet disagree with itself about the noise no longer denoises.
 * Measured on tiny-shapes: the six shipped adapters alone at weights 1 and +-2 keep a spread of 0.98-1.03x and an
 * agreement of 0.977-0.997; the heart adapter with its up-weights scaled x16 (the update bound's edge) 0.92-0.94,
 * x30 0.81, x100 0.36-0.39, x1000 0.00-0.05 (1e30: not finite).
 */
import type { Unet, UnetRow } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { cosineSimilarity } from '../vector.ts';

/** Allowed std(merged prediction) / std(base prediction). */
export const PROBE_SPREAD = Object.freeze({ min: 0.05, max: 20 });
/** Least cosine similarity of the merged prediction with the base one. */
export const PROBE_MIN_AGREEMENT = 0.5;
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

/** The probe row for a UNet's contract (SDXL's added conditions included) at a latent size (a multiple the UNet accepts). */
export function probeInput(unet: Unet, latentHeight: number, latentWidth: number): ProbeInput {
  const hidden = unet.model.input('encoder_hidden_states')?.dims[2];
  const width = typeof hidden === 'number' && hidden > 0 ? hidden : 768;
  const next = seeded(20241130);
  const sample = Float32Array.from({ length: unet.latentChannels * latentHeight * latentWidth }, next);
  const context = Float32Array.from({ length: CONTEXT_TOKENS * width }, next);
  // SDXL's UNet also takes a pooled prompt embedding (text_embeds); its time_ids default to the latent size
  const pooled = unet.pooledSize > 0 ? Float32Array.from({ length: unet.pooledSize }, next) : undefined;
  return { rows: [{ sample, timestep: PROBE_TIMESTEP, context, ...(pooled ? { pooled } : {}) }], latentHeight, latentWidth };
}

/** Standard deviation of the values. */
function spread(values: Float32Array): number {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return Math.sqrt(sq / values.length);
}

/** Runs the probe row through `unet`: its noise prediction. */
export async function probePrediction(unet: Unet, input: ProbeInput): Promise<Float32Array> {
  const [eps] = await unet.predict(input.rows, input.latentHeight, input.latentWidth);
  return eps!;
}

/** Throws model_invalid when a merged UNet's probe prediction is not finite, collapsed, blown up, or no longer agrees with the base's. */
export function checkProbe(merged: Float32Array, base: Float32Array, label: string): void {
  const broken = (what: string) => new ServiceError('model_invalid', `${label}: the merged UNet's prediction ${what} on the probe input: these adapters break the model`);
  if (!merged.every(Number.isFinite)) throw broken('is not finite');
  const ratio = spread(merged) / spread(base);
  if (ratio < PROBE_SPREAD.min) throw broken(`has collapsed (spread ${ratio.toPrecision(3)} x the base model's, at least ${PROBE_SPREAD.min})`);
  if (ratio > PROBE_SPREAD.max) throw broken(`has blown up (spread ${ratio.toPrecision(3)} x the base model's, at most ${PROBE_SPREAD.max})`);
  const agreement = cosineSimilarity(merged, base);
  if (!(agreement >= PROBE_MIN_AGREEMENT)) throw broken(`no longer agrees with the base model's (cosine ${agreement.toFixed(3)}, at least ${PROBE_MIN_AGREEMENT})`);
}

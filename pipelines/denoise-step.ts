/**
 * One denoising step for a set of rows, split in two halves around the UNet call so that the caller
 * decides how rows are batched (one frame, a stream batch, or rows of many streams at once).
 * Both the sequential reference and the stream batch use exactly these functions, so the stream batch
 * is only a reordering of the same math.
 */
import type { UnetRow } from '../models/components.ts';
import { lcmStep, type StepCoefficients } from './schedulers/lcm.ts';
import { guide, needsUncondRow, nextStockNoise, usesStockNoise, type Guidance } from './rcfg.ts';

/** A latent on its way through the steps. */
export interface RowState {
  /** x_t at this row's step, [4 * h * w]. */
  readonly x: Float32Array;
  /** Index into the step coefficients (0 = first, noisiest step). */
  readonly step: number;
  /** Which frame of a frame_buffer_size group this is (selects its initial-noise row). */
  readonly lane: number;
  /** RCFG stock noise for this step (self / initialize only). */
  readonly stock: Float32Array | undefined;
}


export type { UnetRow };

/** Runs the UNet on rows, returning one epsilon prediction per row (same order). */
export type UnetRunner = (rows: readonly UnetRow[]) => Promise<Float32Array[]>;

export interface PromptContext {
  readonly cond: Float32Array;
  readonly uncond: Float32Array;
  /** Pooled embeddings of both (SDXL's text_embeds; other UNets ignore them). */
  readonly pooled?: Float32Array | undefined;
  readonly uncondPooled?: Float32Array | undefined;
  /** The guidance scale an LCM-distilled UNet embeds (timestep_cond); other UNets ignore it. */
  readonly guidanceScale?: number | undefined;
}

/** The initial noise drawn once per stream: one row per (step, lane), reused every frame. */
export interface NoiseTable {
  readonly rows: readonly Float32Array[];
  readonly lanes: number;
}

export function noiseFor(noise: NoiseTable, step: number, lane: number): Float32Array {
  // Wraps after the last step, as the original's roll(init_noise, -1) does.
  const r = noise.rows[(step * noise.lanes + lane) % noise.rows.length];
  if (r === undefined) throw new Error(`no initial noise for step ${step}, lane ${lane}`);
  return r;
}

/** A new latent entering at step 0: x = alpha_0 z + beta_0 noise (z = zeros for txt2img). */
export function enterRow(c: StepCoefficients, g: Guidance, noise: NoiseTable, z: Float32Array, lane: number): RowState {
  const n0 = noiseFor(noise, 0, lane);
  const x = new Float32Array(z.length);
  for (let i = 0; i < x.length; i++) x[i] = c.alpha[0]! * z[i]! + c.beta[0]! * n0[i]!;
  return { x, step: 0, lane, stock: usesStockNoise(g) ? n0 : undefined };
}

/** UNet rows for a step: unconditional rows first (as the original batches them), then one per state. */
export function planStep(states: readonly RowState[], c: StepCoefficients, g: Guidance, prompt: PromptContext): UnetRow[] {
  const uncond = states
    .filter((s) => needsUncondRow(g, s.step))
    .map((s) => ({ sample: s.x, timestep: c.timesteps[s.step]!, context: prompt.uncond, pooled: prompt.uncondPooled, guidanceScale: prompt.guidanceScale }));
  const cond = states.map((s) => ({ sample: s.x, timestep: c.timesteps[s.step]!, context: prompt.cond, pooled: prompt.pooled, guidanceScale: prompt.guidanceScale }));
  return [...uncond, ...cond];
}

export interface StepResult {
  /** The step's denoised output per state (the frame's final output when it was at the last step). */
  readonly denoised: Float32Array[];
  /** The state at the next step, or undefined for states that finished. */
  readonly next: (RowState | undefined)[];
}

/** Completes a step from the UNet's predictions for the rows planStep returned. */
export function finishStep(
  states: readonly RowState[],
  predictions: readonly Float32Array[],
  c: StepCoefficients,
  g: Guidance,
  noise: NoiseTable,
): StepResult {
  const uncondCount = states.filter((s) => needsUncondRow(g, s.step)).length;
  if (predictions.length !== uncondCount + states.length) {
    throw new Error(`expected ${uncondCount + states.length} UNet predictions, got ${predictions.length}`);
  }
  let u = 0;
  const denoised: Float32Array[] = [];
  const next: (RowState | undefined)[] = [];
  states.forEach((s, i) => {
    const uncond = needsUncondRow(g, s.step) ? predictions[u++] : undefined;
    const { eps, stock } = guide(g, predictions[uncondCount + i]!, uncond, s.stock);
    // 1. the consistency step gives this step's denoised latent
    const out = lcmStep(c, s.step, s.x, eps);
    denoised.push(out);
    const last = s.step === c.timesteps.length - 1;
    // 2. RCFG carries its residual noise estimate to the next step
    const nextNoise = noiseFor(noise, s.step + 1, s.lane);
    const nextStock = stock === undefined ? undefined : nextStockNoise(c, s.step, eps, stock, nextNoise);
    if (last) {
      next.push(undefined);
      return;
    }
    // 3. re-noise to the next timestep with the same initial noise every frame (temporal stability)
    const k = s.step + 1;
    const x = new Float32Array(out.length);
    for (let j = 0; j < x.length; j++) x[j] = c.alpha[k]! * out[j]! + c.beta[k]! * nextNoise[j]!;
    next.push({ x, step: k, lane: s.lane, stock: nextStock });
  });
  return { denoised, next };
}

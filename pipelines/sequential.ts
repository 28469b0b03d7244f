/**
 * Sequential denoising: one UNet call per step per frame group. The reference the stream batch is tested
 * against and the baseline of the benchmarks.
 */
import type { StepCoefficients } from './schedulers/lcm.ts';
import type { Guidance } from './rcfg.ts';
import { enterRow, finishStep, planStep, type NoiseTable, type PromptContext, type RowState, type UnetRunner } from './denoise-step.ts';

/**
 * Denoises latents (one per lane, `z` = encoded images, or zeros for txt2img) through all steps.
 * `onStep(k, states)` sees the states entering step k (the stream batch primes its buffer with them).
 */
export async function denoiseSequential(
  latents: readonly Float32Array[],
  c: StepCoefficients,
  g: Guidance,
  prompt: PromptContext,
  noise: NoiseTable,
  runUnet: UnetRunner,
  onStep?: (step: number, states: readonly RowState[]) => void,
): Promise<Float32Array[]> {
  let states: RowState[] = latents.map((z, lane) => enterRow(c, g, noise, z, lane));
  for (let k = 0; ; k++) {
    onStep?.(k, states);
    const predictions = await runUnet(planStep(states, c, g, prompt));
    const result = finishStep(states, predictions, c, g, noise);
    if (k === c.timesteps.length - 1) return result.denoised;
    states = result.next.map((s) => {
      if (s === undefined) throw new Error('a row finished before the last step');
      return s;
    });
  }
}

/**
 * Stream Batch (StreamDiffusion §3.2, REFERENCE §1). Instead of running all n steps on a frame before the
 * next one, every call runs the UNet ONCE on [new frame at step 0 ; frames still in flight at steps 1..n-1]
 * and returns the frame that has just finished its last step. Output lags input by n - 1 frames.
 *
 * Priming (unlike the original, which returns half-denoised brown frames while its buffer fills): when the
 * buffer is empty, the first frame is run sequentially through steps 0..n-2 and its intermediate states
 * fill the buffer. The first call thus returns a fully denoised first frame, which then repeats for n - 1
 * calls while real frames move up the buffer. A new t_index_list needs a new StreamBatch, which primes again.
 *
 * With frameBufferSize f > 1 each step holds f frames ("lanes"); each lane keeps its own initial noise.
 */
import type { StepCoefficients } from './schedulers/lcm.ts';
import { usesStockNoise, type Guidance } from './rcfg.ts';
import {
  enterRow,
  finishStep,
  noiseFor,
  planStep,
  type NoiseTable,
  type PromptContext,
  type RowState,
  type UnetRunner,
} from './denoise-step.ts';

export class StreamBatch {
  /** Rows at steps 1..n-1 (lanes inner), oldest step last. */
  private buffer: RowState[] = [];
  private busy = false;

  constructor(
    private readonly coefficients: StepCoefficients,
    private guidance: Guidance,
    private noise: NoiseTable,
  ) {}

  get lanes(): number {
    return this.noise.lanes;
  }

  /** Frames an output lags its input (steps - 1). */
  get lag(): number {
    return this.coefficients.timesteps.length - 1;
  }

  /** Frames in flight (0 until primed). */
  get inFlight(): number {
    return this.buffer.length;
  }

  /** New guidance applies from the next call; rows in flight keep going. */
  setGuidance(g: Guidance): void {
    this.guidance = g;
  }

  /** New initial noise (seed change) applies to rows from the next call on. */
  setNoise(noise: NoiseTable): void {
    if (noise.rows.length !== this.noise.rows.length) throw new Error('noise table size must not change without new coefficients');
    this.noise = noise;
  }

  /**
   * Adds one group of `lanes` latents (encoded frames; zeros for txt2img) and returns the group that
   * finished: latents denoised through every step, [4 * h * w] each.
   */
  async process(latents: readonly Float32Array[], prompt: PromptContext, runUnet: UnetRunner): Promise<Float32Array[]> {
    if (latents.length !== this.lanes) throw new Error(`expected ${this.lanes} latents per call, got ${latents.length}`);
    if (this.busy) throw new Error('StreamBatch.process must not run concurrently');
    this.busy = true;
    try {
      const c = this.coefficients;
      const g = this.guidance;
      const fresh = latents.map((z, lane) => enterRow(c, g, this.noise, z, lane));
      // 1. prime an empty buffer with the first frame's own intermediate states
      if (this.buffer.length === 0 && c.timesteps.length > 1) await this.prime(fresh, prompt, runUnet);
      // 2. one UNet call over [new ; in flight]
      const rows = [...fresh, ...this.buffer.map((s) => this.withStock(s))];
      const result = finishStep(rows, await runUnet(planStep(rows, c, g, prompt)), c, g, this.noise);
      // 3. the oldest group leaves; every other row moves one step on
      const finishedFrom = rows.length - this.lanes;
      this.buffer = result.next.slice(0, finishedFrom).map((s) => {
        if (s === undefined) throw new Error('a row finished before the last step');
        return s;
      });
      return result.denoised.slice(finishedFrom);
    } finally {
      this.busy = false;
    }
  }

  private async prime(fresh: readonly RowState[], prompt: PromptContext, runUnet: UnetRunner): Promise<void> {
    const c = this.coefficients;
    let states: readonly RowState[] = fresh;
    for (let k = 0; k < c.timesteps.length - 1; k++) {
      const result = finishStep(states, await runUnet(planStep(states, c, this.guidance, prompt)), c, this.guidance, this.noise);
      states = result.next.map((s) => s!);
      this.buffer.push(...states);
    }
  }

  /** Rows that entered under guidance without stock noise get the step's initial noise when it switches on. */
  private withStock(s: RowState): RowState {
    if (!usesStockNoise(this.guidance) || s.stock !== undefined) return s;
    return { ...s, stock: noiseFor(this.noise, s.step, s.lane) };
  }
}

/**
 * The LCM scheduler as StreamDiffusion uses it (REFERENCE §1; diffusers scheduling_lcm.py):
 * SD's 1000-step noise schedule, a 50-step "original" grid timesteps[i] = 999 - 20 i, and the consistency
 * step out = c_out * x0 + c_skip * x_t with x0 = (x_t - beta_t * eps) / alpha_t.
 *
 * The one-step Turbo path (SD-Turbo ships an Euler scheduler config) is the same x0 prediction with the
 * boundary condition switched off (c_skip = 0, c_out = 1): at t = 999 that is exactly Euler's one step.
 */
import { ServiceError } from '../../models/errors.ts';

export interface SchedulerConfig {
  /** diffusers class name; decides the boundary condition (Euler* = Turbo: pure x0). */
  readonly className: string;
  /** Length of SD's training schedule (1000). */
  readonly numTrainTimesteps: number;
  readonly betaStart: number;
  readonly betaEnd: number;
  /** 'scaled_linear' (SD) or 'linear'. */
  readonly betaSchedule: 'scaled_linear' | 'linear';
  /** The grid LCM distils onto: 50 steps of 20 (StreamDiffusion's t_index_list indexes this grid). */
  readonly originalInferenceSteps: number;
  /** LCM's c_skip/c_out use t * timestepScaling (10 in diffusers). */
  readonly timestepScaling: number;
}

export const DEFAULT_SCHEDULER_CONFIG: SchedulerConfig = Object.freeze({
  className: 'LCMScheduler',
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
  betaSchedule: 'scaled_linear',
  originalInferenceSteps: 50,
  timestepScaling: 10,
});

const SIGMA_DATA = 0.5; // LCM's data std in the boundary condition (diffusers' sigma_data)

/** Reads a diffusers scheduler_config.json object; unknown keys are ignored (diffusers writes many). */
export function parseSchedulerConfig(json: Record<string, unknown>): SchedulerConfig {
  const num = (key: string, fallback: number): number => {
    const v = json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new ServiceError('model_invalid', `scheduler_config.json: ${key} must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const prediction = json['prediction_type'] ?? 'epsilon';
  if (prediction !== 'epsilon') {
    throw new ServiceError('unsupported', `scheduler_config.json: prediction_type "${String(prediction)}" is not supported (only epsilon)`);
  }
  const schedule = json['beta_schedule'] ?? 'scaled_linear';
  if (schedule !== 'scaled_linear' && schedule !== 'linear') {
    throw new ServiceError('unsupported', `scheduler_config.json: beta_schedule "${String(schedule)}" is not supported`);
  }
  const d = DEFAULT_SCHEDULER_CONFIG;
  const config: SchedulerConfig = {
    className: typeof json['_class_name'] === 'string' ? json['_class_name'] : d.className,
    numTrainTimesteps: num('num_train_timesteps', d.numTrainTimesteps),
    betaStart: num('beta_start', d.betaStart),
    betaEnd: num('beta_end', d.betaEnd),
    betaSchedule: schedule,
    originalInferenceSteps: num('original_inference_steps', d.originalInferenceSteps),
    timestepScaling: num('timestep_scaling', d.timestepScaling),
  };
  if (config.numTrainTimesteps % config.originalInferenceSteps !== 0) {
    throw new ServiceError('model_invalid', 'scheduler_config.json: num_train_timesteps must be a multiple of original_inference_steps');
  }
  return Object.freeze(config);
}

/** Per-step coefficients for one t_index_list, precomputed once (index k = k-th denoising step). */
export interface StepCoefficients {
  readonly tIndexList: readonly number[];
  readonly timesteps: readonly number[];
  /** sqrt(abar_t) */
  readonly alpha: readonly number[];
  /** sqrt(1 - abar_t) */
  readonly beta: readonly number[];
  readonly cSkip: readonly number[];
  readonly cOut: readonly number[];
}

export class LcmScheduler {
  readonly config: SchedulerConfig;
  /** abar_t for t = 0 .. numTrainTimesteps-1, in float64. */
  readonly alphasCumprod: Float64Array;
  /** The original grid, largest t first: [999, 979, ..., 19] for 1000/50. */
  readonly grid: readonly number[];

  constructor(config: SchedulerConfig = DEFAULT_SCHEDULER_CONFIG) {
    this.config = config;
    const n = config.numTrainTimesteps;
    this.alphasCumprod = new Float64Array(n);
    let prod = 1;
    for (let t = 0; t < n; t++) {
      const beta =
        config.betaSchedule === 'scaled_linear'
          ? (Math.sqrt(config.betaStart) + ((Math.sqrt(config.betaEnd) - Math.sqrt(config.betaStart)) * t) / (n - 1)) ** 2
          : config.betaStart + ((config.betaEnd - config.betaStart) * t) / (n - 1);
      prod *= 1 - beta;
      this.alphasCumprod[t] = prod;
    }
    const stride = n / config.originalInferenceSteps;
    this.grid = Array.from({ length: config.originalInferenceSteps }, (_, i) => n - 1 - i * stride);
  }

  /** True for Turbo-style models whose step is the pure x0 prediction. */
  get isTurbo(): boolean {
    return this.config.className.startsWith('Euler');
  }

  /** Coefficients for a t_index_list; rejects indices off the grid or not strictly increasing. */
  coefficients(tIndexList: readonly number[]): StepCoefficients {
    if (tIndexList.length === 0) throw new ServiceError('bad_request', 't_index_list must not be empty', { field: 't_index_list' });
    tIndexList.forEach((idx, k) => {
      if (!Number.isInteger(idx) || idx < 0 || idx >= this.grid.length) {
        throw new ServiceError('bad_request', `t_index_list[${k}] = ${idx} is outside 0..${this.grid.length - 1}`, { field: 't_index_list' });
      }
      if (k > 0 && idx <= tIndexList[k - 1]!) {
        throw new ServiceError('bad_request', 't_index_list must be strictly increasing (less noise at each step)', { field: 't_index_list' });
      }
    });
    const timesteps = tIndexList.map((i) => this.grid[i]!);
    const scaled = timesteps.map((t) => t * this.config.timestepScaling);
    return Object.freeze({
      tIndexList: [...tIndexList],
      timesteps,
      alpha: timesteps.map((t) => Math.sqrt(this.alphasCumprod[t]!)),
      beta: timesteps.map((t) => Math.sqrt(1 - this.alphasCumprod[t]!)),
      cSkip: scaled.map((s) => (this.isTurbo ? 0 : SIGMA_DATA ** 2 / (s * s + SIGMA_DATA ** 2))),
      cOut: scaled.map((s) => (this.isTurbo ? 1 : s / Math.sqrt(s * s + SIGMA_DATA ** 2))),
    });
  }
}

/**
 * The consistency step for one row at step k: out = c_out * (x_t - beta eps) / alpha + c_skip * x_t.
 * Returns a new array; `x` and `eps` are not modified.
 */
export function lcmStep(c: StepCoefficients, k: number, x: Float32Array, eps: Float32Array): Float32Array {
  const alpha = c.alpha[k]!;
  const beta = c.beta[k]!;
  const cOut = c.cOut[k]!;
  const cSkip = c.cSkip[k]!;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (cOut * (x[i]! - beta * eps[i]!)) / alpha + cSkip * x[i]!;
  return out;
}

/**
 * t_index_list for a user-facing strength in (0, 1] and a number of steps: strength 1 starts from pure
 * noise (index 0, t = 999), smaller strengths start later on the grid and keep more of the input image.
 * The steps are spread evenly from the start index to the end of the grid.
 * Examples on the 50-step grid: (1.0, 4) -> [0, 12, 25, 37]; (0.35, 2) -> [32, 41].
 */
export function tIndexListForStrength(strength: number, steps: number, gridLength = 50): number[] {
  if (!(strength > 0 && strength <= 1)) throw new ServiceError('bad_request', `strength must be in (0, 1], got ${strength}`, { field: 'strength' });
  if (!Number.isInteger(steps) || steps < 1 || steps > gridLength) {
    throw new ServiceError('bad_request', `steps must be an integer in 1..${gridLength}, got ${steps}`, { field: 'steps' });
  }
  const start = Math.round((1 - strength) * (gridLength - 1));
  const span = gridLength - start;
  if (span < steps) {
    throw new ServiceError('bad_request', `strength ${strength} leaves only ${span} grid steps, fewer than steps = ${steps}`, { field: 'strength' });
  }
  return Array.from({ length: steps }, (_, k) => start + Math.floor((k * span) / steps));
}

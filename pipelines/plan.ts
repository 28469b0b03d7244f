/**
 * A request's plan: everything a render or a stream needs to know before its first UNet call, worked out once
 * from the parameters and passed down (size, step coefficients, guidance, prompt embeddings, the UNet variant and
 * its runner). A stream makes a new plan on each live update and compares it with the old one to decide what
 * to rebuild.
 */
import type { Vae } from '../models/pack.ts';
import { withUrgency, type CallClass } from '../models/runtime/urgency.ts';
import type { UnetRunner } from './denoise-step.ts';
import type { EncodedPrompt, Engine, Size, VaeChoice } from './engine.ts';
import type { GenerationParams } from './params.ts';
import { makeGuidance, type Guidance } from './rcfg.ts';
import type { StepCoefficients } from './schedulers/lcm.ts';
import type { UnetVariant } from './variants.ts';

/** txt2img starts from pure noise (strength 1); img2img (and a stream of frames) from encoded images. */
export type Mode = 'txt2img' | 'img2img';

/** Makes the UNet runner for a frame size and UNet variant (the server's batcher, or the engine directly). */
export type RunnerFactory = (size: Size, variant: UnetVariant) => UnetRunner;

export interface Plan {
  readonly params: GenerationParams;
  readonly mode: Mode;
  readonly size: Size;
  readonly coefficients: StepCoefficients;
  readonly guidance: Guidance;
  readonly prompt: EncodedPrompt;
  /** The UNet that serves the request (pack, expert, merged adapters). */
  readonly variant: UnetVariant;
  /** Notes for the caller (e.g. an adapter's layers that match nothing). */
  readonly warnings: readonly string[];
  readonly runner: UnetRunner;
  /** The VAE that encodes and decodes the request's images, and which one it is. */
  readonly vae: Vae;
  readonly vaeName: VaeChoice;
  /**
   * The class every model call of the request carries to the dispatcher (models/runtime/urgency.ts): live for a
   * stream's frames, interactive for a synchronous render, background for a job.
   */
  readonly urgency: CallClass;
}

/** The runner factory a plan uses: the caller's (the server's batcher), else the engine's own. */
function runnersOf(engine: Engine, runners: RunnerFactory | undefined): RunnerFactory {
  return runners ?? ((s, v) => engine.unetRunner(s, v));
}

/** What a request gets for parameters it leaves unset, by where it comes from (a live stream, a batch render). */
export interface PlanDefaults {
  /** The VAE when `vae` is unset; the full one stands in when the pack has no tiny VAE. */
  readonly vae: VaeChoice;
  /** The class of the request's model calls (Plan.urgency). */
  readonly urgency: CallClass;
  /** The input's shape (width / height): the size follows it when the parameters set none (pipelines/aspect.ts). */
  readonly inputAspect?: number;
}

/** Batch renders, the CLI and video: the full VAE unless asked; interactive (someone waits for the result). */
export const BATCH_DEFAULTS: PlanDefaults = Object.freeze({ vae: 'full', urgency: 'interactive' });

/**
 * Plans a request. Throws a ServiceError (and builds nothing) when a parameter does not fit the model: a size
 * off the pack's multiple, an unknown expert or adapter, prompt weights that are all zero. The size follows
 * the input's shape (`defaults.inputAspect`) when the parameters set none.
 */
export async function planRequest(engine: Engine, params: GenerationParams, mode: Mode, runners?: RunnerFactory, defaults: PlanDefaults = BATCH_DEFAULTS): Promise<Plan> {
  const size = engine.size(params, defaults.inputAspect);
  const coefficients = engine.coefficients(params, mode);
  const vae = engine.vae(params.vae ?? defaults.vae, params.vae !== undefined);
  // the prompt's encoding is the request's first model call: it carries the request's class too
  const { prompt, variant } = await withUrgency({ class: defaults.urgency }, () => engine.prepare(params));
  const runner = runnersOf(engine, runners)(size, variant);
  const guidance = makeGuidance(params.guidance, params.guidance_scale, params.delta);
  return { params, mode, size, coefficients, guidance, prompt, variant, warnings: variant.warnings, runner, vae: vae.vae, vaeName: vae.name, urgency: defaults.urgency };
}

/** The same plan at another frame size (a stream following its input's shape): only the runner changes. */
export function resizePlan(engine: Engine, plan: Plan, size: Size, runners?: RunnerFactory): Plan {
  return { ...plan, size, runner: runnersOf(engine, runners)(size, plan.variant) };
}

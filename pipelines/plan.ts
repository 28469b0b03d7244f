/**
 * A request's plan: everything a render or a stream needs to know before its first UNet call, worked out once
 * from the parameters and passed down (size, step coefficients, guidance, prompt embeddings, the UNet variant and
 * its runner), with notes for the caller where the plan differs from what was asked. A stream makes a new plan on
 * each live update and compares it with the old one to decide what to rebuild.
 */
import type { Vae } from '../models/pack.ts';
import { withUrgency, type CallClass } from '../models/runtime/urgency.ts';
import type { UnetRunner } from './denoise-step.ts';
import type { EncodedPrompt, Engine, Size, VaeChoice } from './engine.ts';
import { chooseGuidance, type Flow } from './guidance-choice.ts';
import type { GenerationParams } from './params.ts';
import { makeGuidance, type Guidance } from './rcfg.ts';
import { chooseRenderSize } from './render-size.ts';
import type { StepCoefficients } from './schedulers/lcm.ts';
import type { UnetVariant } from './variants.ts';

export type { Flow } from './guidance-choice.ts';

/** txt2img starts from pure noise (strength 1); img2img (and a stream of frames) from encoded images. */
export type Mode = 'txt2img' | 'img2img';

/** Makes the UNet runner for a frame size and UNet variant (the server's batcher, or the engine directly). */
export type RunnerFactory = (size: Size, variant: UnetVariant) => UnetRunner;

export interface Plan {
  /** The parameters as asked (a stream's next update merges into these). */
  readonly params: GenerationParams;
  readonly mode: Mode;
  readonly flow: Flow;
  /** The size the model runs at. */
  readonly size: Size;
  /** The size of the images handed back: the size asked for (a render out of the pack's range is resized to it). */
  readonly outputSize: { readonly width: number; readonly height: number };
  readonly coefficients: StepCoefficients;
  /** The guidance used (the pack's range and a negative prompt may change what was asked: see notes). */
  readonly guidance: Guidance;
  readonly prompt: EncodedPrompt;
  /** The UNet that serves the request (pack, expert, merged adapters). */
  readonly variant: UnetVariant;
  /** Where the plan differs from the request, in words for the caller (clamped guidance, render size, a prompt cut at the text encoder's 77 tokens, adapters). */
  readonly notes: readonly string[];
  readonly runner: UnetRunner;
  /** Lets go of what the plan holds (a merged adapter variant's lease); call once the plan is no longer used. */
  release(): void;
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
  /** The class of the request's model calls (Plan.urgency); unset: interactive. */
  readonly urgency?: CallClass;
  /** The input's shape (width / height): the size follows it when the parameters set none (pipelines/aspect.ts). */
  readonly inputAspect?: number;
}

/** Batch renders, the CLI and video: the full VAE unless asked; interactive (someone waits for the result). */
export const BATCH_DEFAULTS: PlanDefaults = Object.freeze({ vae: 'full', urgency: 'interactive' });

/** The part of a plan that needs no model run: sizes and guidance, and the notes on them. */
export interface RequestFit {
  readonly size: Size;
  readonly outputSize: { readonly width: number; readonly height: number };
  readonly guidance: Guidance;
  readonly notes: readonly string[];
}

/**
 * Fits a request to the pack: a render out of the pack's size range runs at its training size (a stream's frames
 * are their size; with no size given, the size follows `inputAspect`), guidance within the pack's range. Cheap: a
 * job is fitted when accepted, to report its notes (and to refuse then what the pack cannot do: a size off its
 * multiple, a tiny VAE it does not have).
 */
export function fitRequest(engine: Engine, params: GenerationParams, flow: Flow = 'render', inputAspect?: number): RequestFit {
  const asked = engine.size(params, inputAspect);
  if (params.vae !== undefined) engine.vae(params.vae, true);
  const { pack } = engine;
  const fit =
    flow === 'render'
      ? chooseRenderSize(asked.width, asked.height, { range: pack.defaults.size_range, trainingSize: pack.defaultImageSize, multiple: pack.sizeMultiple }, params)
      : { ...asked, notes: [] };
  const size = fit.width === asked.width && fit.height === asked.height ? asked : engine.size(fit);
  const choice = chooseGuidance(params, pack.defaults.guidance_range, flow);
  return {
    size,
    outputSize: { width: asked.width, height: asked.height },
    guidance: makeGuidance(choice.kind, choice.scale, params.delta),
    notes: [...fit.notes, ...choice.notes],
  };
}

/**
 * Plans a request. Throws a ServiceError (and builds nothing) when a parameter does not fit the model: a size
 * off the pack's multiple, an unknown expert or adapter, prompt weights that are all zero. The size follows
 * the input's shape (`defaults.inputAspect`) when the parameters set none.
 */
export async function planRequest(
  engine: Engine,
  params: GenerationParams,
  mode: Mode,
  runners?: RunnerFactory,
  defaults: PlanDefaults = BATCH_DEFAULTS,
  flow: Flow = 'render',
): Promise<Plan> {
  // 1. size and guidance fitted to the pack
  const fit = fitRequest(engine, params, flow, defaults.inputAspect);
  // 2. schedule, VAE, prompt, UNet
  const coefficients = engine.coefficients(params, mode);
  const vae = engine.vae(params.vae ?? defaults.vae, params.vae !== undefined);
  // last: the variant may hold a lease on a merged UNet, which the plan's release() gives back; the prompt's
  // encoding is the request's first model call: it carries the request's class too
  const urgency = defaults.urgency ?? 'interactive';
  const { prompt, variant } = await withUrgency({ class: urgency }, () => engine.prepare(params));
  const runner = runnersOf(engine, runners)(fit.size, variant);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    variant.release?.();
  };
  return { ...fit, params, mode, flow, coefficients, prompt, variant, notes: [...fit.notes, ...prompt.warnings, ...variant.warnings], runner, vae: vae.vae, vaeName: vae.name, urgency, release };
}

/** The same plan at another frame size (a stream following its input's shape): only the size and runner change. */
export function resizePlan(engine: Engine, plan: Plan, size: Size, runners?: RunnerFactory): Plan {
  return { ...plan, size, outputSize: { width: size.width, height: size.height }, runner: runnersOf(engine, runners)(size, plan.variant) };
}

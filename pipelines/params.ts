/**
 * Generation parameters: one schema for streams, batch renders and the CLI. Field names follow
 * StreamDiffusion's (t_index_list, guidance_scale, delta) in snake_case, as JSON clients send them.
 * Unknown keys and wrong types are rejected with a message that names the field.
 */
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { ServiceError } from '../models/errors.ts';
import { isRecord } from '../models/files.ts';
import { checkAdapterChoices } from '../models/adapters/choices.ts';
import type { PackDefaults } from '../models/pack-kinds.ts';
import { DEFAULT_GUIDANCE, GUIDANCE_KINDS } from './rcfg.ts';
import { DEFAULT_SIMILARITY_FILTER } from './similarity-filter.ts';
import { FITS } from './codecs/image.ts';

/**
 * Denoising steps when a request gives none, by the kind of work: a live stream favours latency (its output lags
 * steps - 1 frames; jobs, video and the WebSocket take this default), a txt2img render favours sharp shapes, an
 * img2img render starts from an image and needs fewer.
 */
export const DEFAULT_STEPS = Object.freeze({ stream: 2, txt2img: 4, img2img: 2 });

/** Most denoising steps: LCM needs few (A1111's 20-150 are clamped to this, with a note). */
export const MAX_STEPS = 8;

/** Longest prompt accepted, in characters (CLIP keeps 77 tokens anyway; this only bounds the work). */
export const MAX_PROMPT_CHARS = 2000;
/** Largest side in pixels: 1024 covers SD 1.5/2.x/Turbo; more only costs memory on a CPU. */
export const MAX_SIDE = 1024;

/** Largest seed (seeds are 32-bit). */
export const MAX_SEED = 2 ** 32 - 1;
/** A1111's "random seed"; every interface takes it, and a request without a seed gets one at random too. */
export const RANDOM_SEED = -1;

const promptText = z.string().max(MAX_PROMPT_CHARS, `must be at most ${MAX_PROMPT_CHARS} characters`);
const seedValue = z.number().int().min(0).max(MAX_SEED);
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Widest and tallest input aspect accepted (8:1, 1:8). */
export const MAX_ASPECT = 8;
export const MIN_ASPECT = 1 / MAX_ASPECT;
const side = z.number().int().min(64).max(MAX_SIDE).multipleOf(8, 'must be a multiple of 8');

export const paramsSchema = z
  .object({
    /** A prompt, or a weighted list of prompts blended together. */
    prompt: z.union([promptText, z.array(z.object({ text: promptText, weight: z.number().min(0).max(100) }).strict()).min(1).max(8)]).default(''),
    /** linear: weighted mean of embeddings; slerp: spherical interpolation (for two or more). */
    prompt_blend: z.enum(['linear', 'slerp']).default('linear'),
    negative_prompt: promptText.default(''),
    /** RCFG kind; self is StreamDiffusion's fast default (no extra UNet rows). */
    guidance: z.enum(GUIDANCE_KINDS).default(DEFAULT_GUIDANCE.kind),
    /** gamma; StreamDiffusion's default 1.2. <= 1 switches guidance off. */
    guidance_scale: z.number().min(0).max(20).default(DEFAULT_GUIDANCE.scale),
    /** RCFG delta: how much of the residual noise estimate stands in for the uncond prediction (1.0). */
    delta: z.number().min(0).max(2).default(DEFAULT_GUIDANCE.delta),
    /** Denoising steps; with strength they give t_index_list. */
    steps: z.number().int().min(1).max(MAX_STEPS).default(DEFAULT_STEPS.stream),
    /** 0..1: how far the output may move from the input (img2img); 1 = start from noise. */
    strength: z.number().gt(0).max(1).optional(),
    /** Raw indices on the 50-step LCM grid; overrides steps/strength. */
    t_index_list: z.array(z.number().int().min(0).max(49)).min(1).max(8).optional(),
    /** One seed, or a weighted list of seeds blended into the initial noise. */
    seed: z.union([seedValue, z.array(z.object({ seed: seedValue, weight: z.number().min(0).max(100) }).strict()).min(1).max(8)]).default(2),
    /** Output size; both default to the largest size with the input's aspect within the model's pixel budget. */
    width: side.optional(),
    height: side.optional(),
    /**
     * The input's aspect (width / height, e.g. 1.7778 for 16:9) when width and height are not given. Streams
     * without one follow the aspect of their frames; batch renders without one are square.
     */
    aspect: z.number().min(MIN_ASPECT).max(MAX_ASPECT).optional(),
    /** What happens to the part of the input outside the output's aspect: cropped (centre) or padded (black bars). */
    fit: z.enum(FITS).default('crop'),
    /**
     * Take guidance and guidance_scale as given. By default a scale outside the pack's recommended range is
     * clamped into it and a negative prompt moves guidance self (which ignores it) to one that uses it; both are
     * reported as notes.
     */
    strict_guidance: z.boolean().default(false),
    /** Render at width x height even outside the pack's size range (by default: at a size in range, then resized). */
    strict_size: z.boolean().default(false),
    /** Stochastic similarity filter: skipping starts at this cosine similarity; 1 disables it. */
    similarity_threshold: z.number().min(0).max(1).default(DEFAULT_SIMILARITY_FILTER.threshold),
    max_skip_frames: z.number().int().min(0).max(1000).default(DEFAULT_SIMILARITY_FILTER.maxSkipFrames),
    /**
     * The VAE: the pack's tiny one (taesd_*: a few times cheaper, slightly softer) or the full one. Unset: the
     * server's default (--tiny-vae: live streams use the tiny VAE when the pack has one, batch renders the full one).
     */
    vae: z.enum(['full', 'tiny']).optional(),
    /** Frames stacked per UNet call (StreamDiffusion's frame_buffer_size). */
    frame_buffer_size: z.number().int().min(1).max(4).default(1),
    /**
     * Compute budget: fraction of the full UNet's MACs (the largest expert that fits serves), or auto (the
     * prompt router decides). Default 1: the full model, since the shipped router trades quality for cost.
     */
    budget: z.union([z.literal('auto'), z.number().gt(0).max(1)]).default(1),
    /** Force one UNet expert by name (overrides the router and the budget). */
    expert: z.string().regex(NAME, 'must be a name of letters, digits, _ and -').optional(),
    /** Adapters merged into the UNet, each with its weight (lambda). */
    adapters: z
      .array(z.object({ name: z.string(), weight: z.number().default(1) }).strict())
      .superRefine((list, ctx) => {
        try {
          checkAdapterChoices(list);
        } catch (error) {
          // the rule names the element (adapters.1.weight): keep that path below the field
          const path = ((error as ServiceError).field ?? '').split('.').slice(1).map((p) => (/^\d+$/.test(p) ? Number(p) : p));
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: (error as Error).message, path });
        }
      })
      .default([]),
  })
  .strict();

export type GenerationParams = z.infer<typeof paramsSchema>;
export type GenerationParamsInput = z.input<typeof paramsSchema>;

function toServiceError(error: z.ZodError): ServiceError {
  const issue = error.issues[0]!;
  const field = issue.path.join('.') || '(body)';
  const message = issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
  return new ServiceError('bad_request', `${field}: ${message}`, { field: issue.code === 'unrecognized_keys' ? issue.keys[0]! : field });
}

/** What a model pack sets for parameters a request leaves out (models/pack-kinds.ts: Turbo 1 step, no guidance). */
export type ParamDefaults = Partial<Pick<GenerationParamsInput, 'steps' | 'guidance' | 'guidance_scale'>>;

/** A pack's defaults for one kind of work, the service's where the pack says nothing. */
export function packParams(pack: PackDefaults, work: keyof typeof DEFAULT_STEPS): Required<ParamDefaults> {
  return { steps: pack.steps?.[work] ?? DEFAULT_STEPS[work], guidance: pack.guidance ?? DEFAULT_GUIDANCE.kind, guidance_scale: pack.guidance_scale ?? DEFAULT_GUIDANCE.scale };
}

/** Fills the pack's defaults into a request body's absent (or undefined) fields; anything but an object is left to fail parsing. */
export function withDefaults(input: unknown, defaults: ParamDefaults): unknown {
  if (input === undefined || input === null) return { ...defaults };
  if (!isRecord(input)) return input;
  return { ...defaults, ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) };
}

/** Full parameters with defaults filled in: the pack's first, then the schema's (seed 2 when none is given: library calls stay reproducible). */
export function parseParams(input: unknown, defaults: ParamDefaults = {}): GenerationParams {
  const result = paramsSchema.safeParse(withDefaults(input, defaults));
  if (!result.success) throw toServiceError(result.error);
  return result.data;
}

/** A random seed in [0, MAX_SEED]. */
export function randomSeed(): number {
  return randomInt(0, MAX_SEED + 1);
}

/** A request's seed: left out or RANDOM_SEED (-1) draws one at random, anything else is used as it is. */
export function resolveSeed<T>(seed: T | undefined): T | number {
  return seed === undefined || seed === RANDOM_SEED ? randomSeed() : seed;
}

/**
 * Parameters a client sent (every interface: A1111, OpenAI, jobs, WebSocket, CLI): as parseParams, but a missing
 * seed or -1 is drawn at random here, as A1111 does, so that the response and the image's metadata can say which.
 */
export function parseRequestParams(input: unknown, defaults: ParamDefaults = {}): GenerationParams {
  const body = input ?? {};
  return parseParams(isRecord(body) ? { ...body, seed: resolveSeed(body['seed']) } : body, defaults);
}

/** Optional fields a live update may clear by sending null. */
const CLEARABLE = new Set(['strength', 't_index_list', 'width', 'height', 'aspect', 'expert', 'vae']);

/** A live update: only the given fields, each validated; returns the merged parameters. */
export function mergeParams(current: GenerationParams, update: unknown): GenerationParams {
  if (!isRecord(update)) {
    throw new ServiceError('bad_request', 'parameters must be a JSON object');
  }
  const present = Object.fromEntries(Object.entries(update).filter(([k, v]) => !(v === null && CLEARABLE.has(k))));
  if (present['seed'] === RANDOM_SEED) present['seed'] = randomSeed();
  const partial = paramsSchema.partial().safeParse(present);
  if (!partial.success) throw toServiceError(partial.error);
  const merged: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries({ ...update, ...present })) {
    // null clears an optional field (back to the router, the pack's size, steps/strength ...)
    if (value === null && CLEARABLE.has(key)) delete merged[key];
    else merged[key] = value;
  }
  // A new steps or strength asks for a new schedule: an older raw t_index_list must not override it.
  if (('steps' in update || 'strength' in update) && !('t_index_list' in update)) delete merged['t_index_list'];
  return parseParams(merged);
}

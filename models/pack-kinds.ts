/**
 * The kinds of model pack the loader knows, told apart by model_index.json (diffusers writes
 * StableDiffusionPipeline, StableDiffusionXLPipeline, OnnxStableDiffusionPipeline ...; optimum
 * ORTStableDiffusionPipeline, ORTStableDiffusionXLPipeline ...) or, when the class name says nothing, by a second
 * text encoder in the folder; the component folders each has (STYLE 3: a typed table maps components to sessions);
 * and the generation defaults a pack implies. A new family (ControlNet) is a new row here plus the wrappers of
 * its extra components.
 *   stable-diffusion     SD 1.x / 2.x, SD-Turbo, LCM: text_encoder + tokenizer (last hidden state)
 *   stable-diffusion-xl  SDXL, SDXL-Turbo: text_encoder + tokenizer and text_encoder_2 + tokenizer_2 (penultimate
 *                        hidden states side by side; text_encoder_2's text_embeds and time_ids into the UNet)
 */
import type { HiddenLayer } from './components.ts';
import { invalidField, isRecord } from './files.ts';

/** A component folder of a pack (`<folder>/model.onnx`). */
export type ComponentFolder = 'text_encoder' | 'text_encoder_2' | 'unet' | 'vae_encoder' | 'vae_decoder' | 'taesd_encoder' | 'taesd_decoder';

/** One CLIP text tower: its model and tokenizer folders, and the hidden state the UNet reads. */
export interface TextTowerSpec {
  readonly encoder: ComponentFolder;
  readonly tokenizer: string;
  readonly layer: HiddenLayer;
}

export interface PackKind {
  readonly name: 'stable-diffusion' | 'stable-diffusion-xl';
  /** Matches model_index.json's _class_name. */
  readonly classPattern: RegExp;
  /** The text towers, in the order their hidden states are concatenated (the last one's pooled output is the pack's). */
  readonly towers: readonly TextTowerSpec[];
  /** Folders that must hold a model. */
  readonly required: readonly ComponentFolder[];
  /** Folders used when present (img2img needs the encoder; the tiny VAE is chosen per options). */
  readonly optional: readonly ComponentFolder[];
}

const OPTIONAL: readonly ComponentFolder[] = ['vae_encoder', 'taesd_encoder', 'taesd_decoder'];

export const PACK_KINDS: readonly PackKind[] = [
  {
    name: 'stable-diffusion-xl',
    classPattern: /XL/,
    towers: [
      { encoder: 'text_encoder', tokenizer: 'tokenizer', layer: 'penultimate' },
      { encoder: 'text_encoder_2', tokenizer: 'tokenizer_2', layer: 'penultimate' },
    ],
    required: ['text_encoder', 'text_encoder_2', 'unet', 'vae_decoder'],
    optional: OPTIONAL,
  },
  {
    // SD 1.x / 2.x, SD-Turbo, LCM: one CLIP text encoder, a UNet2DConditionModel and an AutoencoderKL
    name: 'stable-diffusion',
    classPattern: /./,
    towers: [{ encoder: 'text_encoder', tokenizer: 'tokenizer', layer: 'last' }],
    required: ['text_encoder', 'unet', 'vae_decoder'],
    optional: OPTIONAL,
  },
];

/** The kind of a pack from its model_index.json; a pack that lists (or has) text_encoder_2 is SDXL whatever its class name. */
export function packKind(modelIndex: Record<string, unknown>, hasSecondEncoder = false): PackKind {
  const className = typeof modelIndex['_class_name'] === 'string' ? modelIndex['_class_name'] : '';
  const xl = PACK_KINDS[0]!;
  if ('text_encoder_2' in modelIndex || hasSecondEncoder) return xl;
  return PACK_KINDS.find((k) => k.classPattern.test(className))!;
}


export type GuidanceKind = 'none' | 'full' | 'self' | 'initialize';

/**
 * What a pack implies for parameters a request leaves out, and what it renders well with. model_index.json's
 * optional `streamdiffusion` object overrides any of it, e.g. `{"guidance_range": [1, 2], "size_range": [96, 192],
 * "steps": 2 | {"stream": 2, "txt2img": 4, "img2img": 2}, "guidance": "self", "guidance_scale": 1.2}`.
 */
export interface PackDefaults {
  /**
   * Guidance scales (gamma) the model renders well with, [min, max]. Few-step LCM models: 1-2. A request outside
   * the range is brought into it and told so, unless it asks for the raw value (strict_guidance).
   */
  readonly guidance_range: readonly [number, number];
  /** Image sides in pixels the model renders well at, [min, max]; default half to twice its training size (strict_size). */
  readonly size_range: readonly [number, number];
  /** Steps by kind of work when a request gives none (absent: the service's, pipelines/params.ts DEFAULT_STEPS). */
  readonly steps?: { readonly stream: number; readonly txt2img: number; readonly img2img: number };
  /** Guidance kind and scale when a request gives none (absent: the service's, RCFG self 1.2). */
  readonly guidance?: GuidanceKind;
  readonly guidance_scale?: number;
}

/** LCM-sampled models drift colours and add noise above full CFG 2 (tiny-shapes: accuracy .98 at 2, .57 at 7). */
export const DEFAULT_GUIDANCE_RANGE: readonly [number, number] = Object.freeze([1, 2] as const);

/** Turbo models (Euler scheduler configs) are distilled for one step without classifier-free guidance. */
const TURBO_DEFAULTS = Object.freeze({ steps: Object.freeze({ stream: 1, txt2img: 1, img2img: 1 }), guidance: 'none' as const });
/** LCM-distilled UNets (a timestep_cond input) have guidance built in: w = 8 is the LCM paper's and diffusers' default. */
const LCM_DISTILLED_DEFAULTS = Object.freeze({ guidance: 'none' as const, guidance_scale: 8 });

const GUIDANCE_KINDS: readonly GuidanceKind[] = ['none', 'full', 'self', 'initialize'];

/** What the pack's scheduler and UNet say about its generation defaults. */
export interface PackModelFacts {
  /** scheduler_config.json's _class_name (Euler: a Turbo model). */
  readonly schedulerClass: string;
  /** The UNet has an LCM guidance embedding input (timestep_cond). */
  readonly guidanceEmbedding: boolean;
}

/**
 * The pack's defaults: the ranges above, the steps and guidance its scheduler and UNet imply (LCM and LCM-LoRA
 * packs: none, the service's are theirs), then model_index.json's `streamdiffusion` object over them.
 */
export function packDefaults(modelIndex: Record<string, unknown>, trainingSize: number, facts?: PackModelFacts): PackDefaults {
  const implied = !facts ? {} : facts.guidanceEmbedding ? LCM_DISTILLED_DEFAULTS : facts.schedulerClass.startsWith('Euler') ? TURBO_DEFAULTS : {};
  const base: PackDefaults = { guidance_range: DEFAULT_GUIDANCE_RANGE, size_range: [trainingSize / 2, trainingSize * 2], ...implied };
  const override = modelIndex['streamdiffusion'];
  if (override === undefined) return Object.freeze(base);
  const source = 'model_index.json';
  if (!isRecord(override)) throw invalidField(source, 'streamdiffusion', 'must be an object');
  const range = (v: unknown, field: string, max: number): readonly [number, number] => {
    if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number' && x >= 0 && x <= max) || v[0] > v[1]) {
      throw invalidField(source, field, `must be [min, max] with 0 <= min <= max <= ${max}`);
    }
    return Object.freeze([v[0] as number, v[1] as number] as const);
  };
  const steps = (v: unknown, field: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 8) throw invalidField(source, field, 'must be an integer in 1..8');
    return v;
  };
  let result = base;
  for (const [key, value] of Object.entries(override)) {
    if (key === 'guidance_range') result = { ...result, guidance_range: range(value, 'streamdiffusion.guidance_range', 20) };
    else if (key === 'size_range') result = { ...result, size_range: range(value, 'streamdiffusion.size_range', 4096) };
    else if (key === 'steps' && isRecord(value)) {
      const kinds = ['stream', 'txt2img', 'img2img'] as const;
      const unknown = Object.keys(value).find((k) => !(kinds as readonly string[]).includes(k));
      if (unknown) throw invalidField(source, `streamdiffusion.steps.${unknown}`, 'is not a kind of work (stream, txt2img, img2img)');
      if (kinds.some((k) => value[k] === undefined)) throw invalidField(source, 'streamdiffusion.steps', 'must give stream, txt2img and img2img');
      result = { ...result, steps: { stream: steps(value['stream'], 'streamdiffusion.steps.stream'), txt2img: steps(value['txt2img'], 'streamdiffusion.steps.txt2img'), img2img: steps(value['img2img'], 'streamdiffusion.steps.img2img') } };
    } else if (key === 'steps') {
      const n = steps(value, 'streamdiffusion.steps');
      result = { ...result, steps: { stream: n, txt2img: n, img2img: n } };
    } else if (key === 'guidance') {
      if (!GUIDANCE_KINDS.includes(value as GuidanceKind)) throw invalidField(source, 'streamdiffusion.guidance', `must be one of ${GUIDANCE_KINDS.join(', ')}`);
      result = { ...result, guidance: value as GuidanceKind };
    } else if (key === 'guidance_scale') {
      if (typeof value !== 'number' || !(value >= 0 && value <= 20)) throw invalidField(source, 'streamdiffusion.guidance_scale', 'must be a number in 0..20');
      result = { ...result, guidance_scale: value };
    } else throw invalidField(source, `streamdiffusion.${key}`, 'is not a known default (guidance_range, size_range, steps, guidance, guidance_scale)');
  }
  return Object.freeze(result);
}

/**
 * The kinds of model pack the loader knows, told apart by model_index.json's `_class_name` (diffusers writes
 * StableDiffusionPipeline, OnnxStableDiffusionPipeline ...; optimum ORTStableDiffusionPipeline, ORTLatentConsistency-
 * ModelPipeline ...), and the component folders each one has. A new family (SDXL, ControlNet) is a new row here
 * plus the wrappers of its extra components.
 */
import { ServiceError } from './errors.ts';
import { invalidField, isRecord } from './files.ts';

/** A component folder of a pack (`<folder>/model.onnx`). */
export type ComponentFolder = 'text_encoder' | 'unet' | 'vae_encoder' | 'vae_decoder' | 'taesd_encoder' | 'taesd_decoder';

export interface PackKind {
  readonly name: string;
  /** Matches model_index.json's _class_name. */
  readonly classPattern: RegExp;
  /** Folders that must hold a model. */
  readonly required: readonly ComponentFolder[];
  /** Folders used when present (img2img needs the encoder; the tiny VAE is chosen per options). */
  readonly optional: readonly ComponentFolder[];
  /** Why a kind is known but cannot run yet (its rows are still listed, so the error can say what the pack is). */
  readonly unsupported?: string;
}

export const PACK_KINDS: readonly PackKind[] = [
  {
    name: 'stable-diffusion-xl',
    classPattern: /XL/,
    required: ['text_encoder', 'unet', 'vae_decoder'],
    optional: ['vae_encoder'],
    unsupported: 'SDXL packs (two text encoders, text_embeds and time_ids) are not supported yet',
  },
  {
    // SD 1.x / 2.x, SD-Turbo, LCM: one CLIP text encoder, a UNet2DConditionModel and an AutoencoderKL
    name: 'stable-diffusion',
    classPattern: /./,
    required: ['text_encoder', 'unet', 'vae_decoder'],
    optional: ['vae_encoder', 'taesd_encoder', 'taesd_decoder'],
  },
];

/** The kind of a pack from its model_index.json; unsupported kinds are an error that says what the pack is. */
export function packKind(modelIndex: Record<string, unknown>): PackKind {
  const className = typeof modelIndex['_class_name'] === 'string' ? modelIndex['_class_name'] : '';
  const kind = PACK_KINDS.find((k) => k.classPattern.test(className))!;
  if (kind.unsupported) throw new ServiceError('unsupported', `model_index.json: ${className} is a ${kind.name} pack: ${kind.unsupported}`);
  return kind;
}

/**
 * What a pack recommends beyond its files (model_index.json's optional `streamdiffusion` object, e.g.
 * `{"guidance_range": [1, 2], "size_range": [96, 192]}`). A request outside a range is brought into it and told
 * so, unless it asks for the raw value (strict_guidance, strict_size).
 */
export interface PackDefaults {
  /** Guidance scales (gamma) the model renders well with, [min, max]. Few-step LCM models: 1-2. */
  readonly guidance_range: readonly [number, number];
  /** Image sides in pixels the model renders well at, [min, max]; default half to twice its training size. */
  readonly size_range: readonly [number, number];
}

/** LCM-sampled models drift colours and add noise above full CFG 2 (tiny-shapes: accuracy .98 at 2, .57 at 7). */
export const DEFAULT_GUIDANCE_RANGE: readonly [number, number] = Object.freeze([1, 2] as const);

/** The pack's recommendations: the defaults above, overridden by model_index.json's `streamdiffusion` object. */
export function packDefaults(modelIndex: Record<string, unknown>, trainingSize: number): PackDefaults {
  const base: PackDefaults = { guidance_range: DEFAULT_GUIDANCE_RANGE, size_range: [trainingSize / 2, trainingSize * 2] };
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
  let result = base;
  for (const [key, value] of Object.entries(override)) {
    if (key === 'guidance_range') result = { ...result, guidance_range: range(value, 'streamdiffusion.guidance_range', 20) };
    else if (key === 'size_range') result = { ...result, size_range: range(value, 'streamdiffusion.size_range', 4096) };
    else throw invalidField(source, `streamdiffusion.${key}`, 'is not a known default (guidance_range, size_range)');
  }
  return Object.freeze(result);
}

/**
 * The kinds of model pack the loader knows, told apart by model_index.json's `_class_name` (diffusers writes
 * StableDiffusionPipeline, OnnxStableDiffusionPipeline ...; optimum ORTStableDiffusionPipeline, ORTLatentConsistency-
 * ModelPipeline ...), and the component folders each one has. A new family (SDXL, ControlNet) is a new row here
 * plus the wrappers of its extra components.
 */
import { ServiceError } from './errors.ts';

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

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
import type { HiddenLayer, Unet } from './components.ts';
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
 * What a pack implies for parameters a request leaves out, where it differs from the service's defaults (LCM's:
 * pipelines/params.ts DEFAULT_STEPS, RCFG self 1.2), by the kind of work.
 */
export interface PackDefaults {
  readonly steps?: { readonly stream: number; readonly txt2img: number; readonly img2img: number };
  readonly guidance?: GuidanceKind;
  readonly guidance_scale?: number;
}

/** Turbo models (Euler scheduler configs) are distilled for one step without classifier-free guidance. */
const TURBO_DEFAULTS: PackDefaults = Object.freeze({ steps: Object.freeze({ stream: 1, txt2img: 1, img2img: 1 }), guidance: 'none' });
/** LCM-distilled UNets (a timestep_cond input) have guidance built in: w = 8 is the LCM paper's and diffusers' default. */
const LCM_DISTILLED_DEFAULTS: PackDefaults = Object.freeze({ guidance: 'none', guidance_scale: 8 });

const GUIDANCE_KINDS: readonly GuidanceKind[] = ['none', 'full', 'self', 'initialize'];

/**
 * The pack's defaults: from the scheduler and UNet it has (LCM and LCM-LoRA packs: none, the service's are
 * theirs), overridden by an optional `streamdiffusion` object in model_index.json
 * ({"steps": 2 | {"stream": 2, "txt2img": 4, "img2img": 2}, "guidance": "self", "guidance_scale": 1.2}).
 */
export function packDefaults(modelIndex: Record<string, unknown>, schedulerClass: string, unet: Unet): PackDefaults {
  const base = unet.guidanceEmbeddingSize > 0 ? LCM_DISTILLED_DEFAULTS : schedulerClass.startsWith('Euler') ? TURBO_DEFAULTS : {};
  const override = modelIndex['streamdiffusion'];
  if (override === undefined) return base;
  const source = 'model_index.json';
  if (!isRecord(override)) throw invalidField(source, 'streamdiffusion', 'must be an object');
  const steps = (v: unknown, field: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 8) throw invalidField(source, field, 'must be an integer in 1..8');
    return v;
  };
  let result: PackDefaults = base;
  for (const [key, value] of Object.entries(override)) {
    if (key === 'steps' && isRecord(value)) {
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
    } else throw invalidField(source, `streamdiffusion.${key}`, 'is not a known default (steps, guidance, guidance_scale)');
  }
  return Object.freeze(result);
}

/**
 * What a pack folder holds, by kind (STYLE 3: packs are described by their files, a typed table maps components
 * to sessions), and the generation defaults a pack implies.
 *   sd    Stable Diffusion 1.x / 2.x, SD-Turbo, LCM: text_encoder + tokenizer (last hidden state)
 *   sdxl  SDXL, SDXL-Turbo: text_encoder + tokenizer and text_encoder_2 + tokenizer_2 (penultimate hidden states,
 *         pooled text_embeds and time_ids into the UNet)
 * Both: unet, vae_decoder, optionally vae_encoder (img2img) and taesd_encoder + taesd_decoder (a tiny VAE).
 */
import type { HiddenLayer, Unet } from './components.ts';
import { invalidField, isRecord } from './files.ts';

export interface TextTowerSpec {
  readonly encoder: string;
  readonly tokenizer: string;
  readonly layer: HiddenLayer;
}

export interface PackKind {
  readonly name: 'sd' | 'sdxl';
  readonly towers: readonly TextTowerSpec[];
}

export const PACK_KINDS: Readonly<Record<PackKind['name'], PackKind>> = Object.freeze({
  sd: { name: 'sd', towers: [{ encoder: 'text_encoder', tokenizer: 'tokenizer', layer: 'last' }] },
  sdxl: {
    name: 'sdxl',
    towers: [
      { encoder: 'text_encoder', tokenizer: 'tokenizer', layer: 'penultimate' },
      { encoder: 'text_encoder_2', tokenizer: 'tokenizer_2', layer: 'penultimate' },
    ],
  },
});

/** SDXL when model_index.json names a second text encoder or an XL pipeline (ORTStableDiffusionXLPipeline ...), or the folder has one. */
export function packKind(modelIndex: Record<string, unknown>, hasSecondEncoder: boolean): PackKind {
  const className = typeof modelIndex['_class_name'] === 'string' ? modelIndex['_class_name'] : '';
  return 'text_encoder_2' in modelIndex || /XL/.test(className) || hasSecondEncoder ? PACK_KINDS.sdxl : PACK_KINDS.sd;
}

export type GuidanceKind = 'none' | 'full' | 'self' | 'initialize';

/** Defaults for the parameters a request leaves out, per pack. */
export interface PackDefaults {
  /** Denoising steps for a render from noise and for an edit (streams use the edit's). */
  readonly steps: { readonly txt2img: number; readonly img2img: number };
  readonly guidance: GuidanceKind;
  readonly guidance_scale: number;
}

/** LCM and LCM-LoRA models: StreamDiffusion's defaults (RCFG self, gamma 1.2). */
const LCM_DEFAULTS: PackDefaults = Object.freeze({ steps: Object.freeze({ txt2img: 4, img2img: 2 }), guidance: 'self', guidance_scale: 1.2 });
/** Turbo models (Euler scheduler configs) are distilled for one step without classifier-free guidance. */
const TURBO_DEFAULTS: PackDefaults = Object.freeze({ steps: Object.freeze({ txt2img: 1, img2img: 1 }), guidance: 'none', guidance_scale: 1 });
/** LCM-distilled UNets (a timestep_cond input) have guidance built in: w = 8 is the LCM paper's and diffusers' default. */
const LCM_DISTILLED_DEFAULTS: PackDefaults = Object.freeze({ steps: Object.freeze({ txt2img: 4, img2img: 2 }), guidance: 'none', guidance_scale: 8 });

const GUIDANCE_KINDS: readonly GuidanceKind[] = ['none', 'full', 'self', 'initialize'];

/**
 * The pack's defaults: from the scheduler and UNet it has, overridden by an optional `streamdiffusion` object in
 * model_index.json ({"steps": 2 | {"txt2img": 4, "img2img": 2}, "guidance": "self", "guidance_scale": 1.2}).
 */
export function packDefaults(modelIndex: Record<string, unknown>, schedulerClass: string, unet: Unet): PackDefaults {
  const base = unet.guidanceEmbeddingSize > 0 ? LCM_DISTILLED_DEFAULTS : schedulerClass.startsWith('Euler') ? TURBO_DEFAULTS : LCM_DEFAULTS;
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
    if (key === 'steps') {
      const s = isRecord(value)
        ? { txt2img: steps(value['txt2img'] ?? base.steps.txt2img, 'streamdiffusion.steps.txt2img'), img2img: steps(value['img2img'] ?? base.steps.img2img, 'streamdiffusion.steps.img2img') }
        : { txt2img: steps(value, 'streamdiffusion.steps'), img2img: steps(value, 'streamdiffusion.steps') };
      result = { ...result, steps: s };
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

/** The defaults as request parameters for one kind of request (streams use the edit's steps). */
export function defaultParams(d: PackDefaults, mode: 'txt2img' | 'img2img' | 'stream'): { steps: number; guidance: GuidanceKind; guidance_scale: number } {
  return { steps: mode === 'txt2img' ? d.steps.txt2img : d.steps.img2img, guidance: d.guidance, guidance_scale: d.guidance_scale };
}

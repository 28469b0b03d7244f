/**
 * AUTOMATIC1111's "infotext": the generation parameters as text, as A1111 writes them into a PNG's `parameters`
 * chunk and reads them back (PNG Info, "Send to txt2img"; civitai and other metadata readers read the same):
 *   a large red circle <lora:heart:1>
 *   Negative prompt: blurry
 *   Steps: 4, Sampler: LCM, CFG scale: 2, Seed: 7, Size: 128x128, Model: tiny-shapes, Guidance: full
 * Adapters are <lora:> tags and blends `text :w AND text :w` in the prompt (prompt-syntax.ts); what A1111 has no key
 * for follows as keys of our own (Guidance, RCFG delta, Prompt blend, Seed blend, T index list, Budget, Expert,
 * Strict guidance, Strict size, Aspect, Fit); VAE is A1111's own key (a file name there, `tiny` or `full` here). Values with a
 * comma, colon or newline are JSON strings, as A1111 quotes them.
 * The text records what was used (the guidance after the pack's range, the expert that served), so that reading
 * it back renders the same image.
 */
import { ServiceError } from '../models/errors.ts';
import { DEFAULT_IMG2IMG_STRENGTH } from './engine.ts';
import type { GeneratedImage } from './generate.ts';
import { MAX_STEPS, paramsSchema, type GenerationParamsInput } from './params.ts';
import type { Mode, Plan } from './plan.ts';
import { parsePrompt, variationSeeds, writePrompt } from './prompt-syntax.ts';
import { GUIDANCE_KINDS, type GuidanceKind } from './rcfg.ts';

/** The only sampler here. */
export const SAMPLER = 'LCM';

/** A1111's quote(): a value with a comma, colon or newline becomes a JSON string. */
function quote(value: string): string {
  return /[,:\n]/.test(value) ? JSON.stringify(value) : value;
}

/** The infotext of image `image` of a plan, rendered by model `model`. */
export function writeInfotext(plan: Plan, image: Pick<GeneratedImage, 'index' | 'width' | 'height'> & { readonly variant: Pick<GeneratedImage['variant'], 'expert' | 'relativeMacs' | 'adapters'> }, model: string): string {
  const { params, guidance, coefficients, mode } = plan;
  const shift = (s: number) => (s + image.index) % 2 ** 32;
  const seeds = typeof params.seed === 'number' ? [{ seed: shift(params.seed), weight: 1 }] : params.seed.map((s) => ({ seed: shift(s.seed), weight: s.weight }));
  const { variant } = image;
  const fields: [string, string | number | boolean | undefined][] = [
    ['Steps', coefficients.timesteps.length],
    ['Sampler', SAMPLER],
    ['CFG scale', guidance.kind === 'none' ? 1 : guidance.scale],
    ['Seed', seeds[0]!.seed],
    ['Size', `${image.width}x${image.height}`],
    ['Model', model],
    ['Denoising strength', mode === 'img2img' ? (params.strength ?? DEFAULT_IMG2IMG_STRENGTH) : undefined],
    ['Guidance', guidance.kind],
    ['RCFG delta', guidance.kind === 'self' || guidance.kind === 'initialize' ? guidance.delta : undefined],
    ['Prompt blend', typeof params.prompt !== 'string' && params.prompt_blend !== 'linear' ? params.prompt_blend : undefined],
    ['Seed blend', seeds.length > 1 ? seeds.map((s) => `${s.seed}:${s.weight}`).join(', ') : undefined],
    ['T index list', params.t_index_list ? JSON.stringify(params.t_index_list) : undefined],
    ['Budget', params.budget !== 1 ? params.budget : undefined],
    ['Expert', variant.relativeMacs < 1 || params.expert !== undefined ? variant.expert : undefined],
    ['Strict guidance', params.strict_guidance || undefined],
    ['Strict size', params.strict_size || undefined],
    ['Aspect', params.aspect],
    ['Fit', params.fit !== 'crop' ? params.fit : undefined],
    // A1111 names its VAE file here; ours: tiny when the tiny VAE decoded, full when asked for by name
    ['VAE', plan.vaeName === 'tiny' || params.vae !== undefined ? plan.vaeName : undefined],
  ];
  const line = fields
    .filter((f): f is [string, string | number | boolean] => f[1] !== undefined)
    .map(([k, v]) => `${k}: ${quote(String(v))}`)
    .join(', ');
  const negative = params.negative_prompt ? `\nNegative prompt: ${params.negative_prompt}` : '';
  return `${writePrompt(params.prompt, variant.adapters)}${negative}\n${line}`;
}

export interface ParsedInfotext {
  /** A1111's own reading (parse_generation_parameters): Prompt, Negative prompt, each key of the last line. */
  readonly fields: Readonly<Record<string, string>>;
  /** The same in this service's vocabulary, ready for any interface (only what the text says). */
  readonly params: GenerationParamsInput;
  /** img2img when the text has a denoising strength. */
  readonly mode: Mode;
  /** What could not be taken over as it was (clamped steps, an unknown guidance ...). */
  readonly notes: readonly string[];
}

/** A1111's re_param and re_imagesize (modules/infotext_utils.py). */
const PARAM = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
const IMAGE_SIZE = /^(\d+)x(\d+)$/;

/** A1111's parse_generation_parameters: prompt lines, the "Negative prompt:" lines, then the key: value line. */
function readFields(text: string): Record<string, string> {
  const lines = text.trim().split('\n');
  let last = lines.pop() ?? '';
  if ([...last.matchAll(PARAM)].length < 3) {
    lines.push(last);
    last = '';
  }
  let prompt = '';
  let negative = '';
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    if (inNegative) negative += (negative === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  const fields: Record<string, string> = { Prompt: prompt, 'Negative prompt': negative };
  for (const [, key, raw] of last.matchAll(PARAM)) {
    let value = raw!.trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      try {
        value = String(JSON.parse(value));
      } catch {
        // A1111 keeps a value it cannot unquote as it is
      }
    }
    const size = IMAGE_SIZE.exec(value);
    if (size) {
      fields[`${key!}-1`] = size[1]!;
      fields[`${key!}-2`] = size[2]!;
    } else fields[key!] = value;
  }
  return fields;
}

/** Reads an infotext (ours or A1111's) into generation parameters. A malformed value is a bad_request naming its key. */
export function parseInfotext(text: string): ParsedInfotext {
  const fields = readFields(text);
  const notes: string[] = [];
  const params: Record<string, unknown> = {};
  const num = (key: string): number | undefined => {
    const v = fields[key];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new ServiceError('bad_request', `infotext: ${key} is not a number: "${v}"`, { field: key });
    return n;
  };
  // 1. prompt: adapters from <lora:> tags, blends from AND
  const { prompt, adapters } = parsePrompt(fields['Prompt']!, { blends: true });
  params['prompt'] = prompt;
  if (adapters.length > 0) params['adapters'] = adapters;
  if (fields['Negative prompt']) params['negative_prompt'] = fields['Negative prompt'];
  // 2. what A1111 has keys for
  const steps = num('Steps');
  if (steps !== undefined) {
    params['steps'] = Math.min(MAX_STEPS, steps);
    if (steps > MAX_STEPS) notes.push(`Steps ${steps} clamped to ${MAX_STEPS}: LCM needs only a few`);
  }
  if (fields['Sampler'] !== undefined && fields['Sampler'].toUpperCase() !== SAMPLER) notes.push(`sampler "${fields['Sampler']}" is not available here: renders use ${SAMPLER}`);
  const cfg = num('CFG scale');
  const kind = fields['Guidance'];
  if (kind !== undefined && !(GUIDANCE_KINDS as readonly string[]).includes(kind)) {
    throw new ServiceError('bad_request', `infotext: Guidance must be one of ${GUIDANCE_KINDS.join(', ')}, got "${kind}"`, { field: 'Guidance' });
  }
  // A1111 always guides with full CFG; our own texts name the kind
  if (kind !== undefined || cfg !== undefined) params['guidance'] = (kind as GuidanceKind | undefined) ?? 'full';
  if (cfg !== undefined && kind !== 'none') params['guidance_scale'] = cfg;
  const seed = num('Seed');
  const subseed = num('Variation seed');
  const subStrength = num('Variation seed strength');
  if (seed !== undefined) params['seed'] = subseed !== undefined && subStrength !== undefined ? variationSeeds(seed, subseed, subStrength) : seed;
  const width = num('Size-1');
  const height = num('Size-2');
  if (width !== undefined && height !== undefined) {
    if (width % 8 === 0 && height % 8 === 0) Object.assign(params, { width, height });
    else notes.push(`size ${width}x${height} is not a multiple of 8: the model's size is used`);
  }
  const strength = num('Denoising strength');
  if (strength !== undefined) params['strength'] = strength;
  // 3. ours
  const delta = num('RCFG delta');
  if (delta !== undefined) params['delta'] = delta;
  if (fields['Prompt blend'] !== undefined) params['prompt_blend'] = fields['Prompt blend'];
  if (fields['Seed blend'] !== undefined) params['seed'] = seedBlend(fields['Seed blend']);
  if (fields['T index list'] !== undefined) params['t_index_list'] = json(fields['T index list'], 'T index list');
  const budget = fields['Budget'];
  if (budget !== undefined) params['budget'] = budget === 'auto' ? 'auto' : num('Budget');
  if (fields['Expert'] !== undefined) params['expert'] = fields['Expert'];
  if (fields['Strict guidance'] === 'true') params['strict_guidance'] = true;
  if (fields['Strict size'] === 'true') params['strict_size'] = true;
  const aspect = num('Aspect');
  if (aspect !== undefined) params['aspect'] = aspect;
  if (fields['Fit'] !== undefined) params['fit'] = fields['Fit'];
  const vae = fields['VAE'];
  if (vae === 'tiny' || vae === 'full') params['vae'] = vae;
  else if (vae !== undefined) notes.push(`VAE "${vae}" is not available here: the model's own VAE is used`);
  // 4. checked against the vocabulary, errors named by the infotext's key
  const checked = paramsSchema.partial().safeParse(params);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new ServiceError('bad_request', `infotext: ${issue.path.join('.')}: ${issue.message}`, { field: String(issue.path[0] ?? 'parameters') });
  }
  return { fields, params: params as GenerationParamsInput, mode: strength !== undefined ? 'img2img' : 'txt2img', notes };
}

function json(text: string, key: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ServiceError('bad_request', `infotext: ${key} is not valid: "${text}"`, { field: key });
  }
}

/** "7:1, 9:0.5" -> [{seed: 7, weight: 1}, {seed: 9, weight: 0.5}] */
function seedBlend(text: string): { seed: number; weight: number }[] {
  return text.split(',').map((part) => {
    const [seed, weight] = part.split(':').map((s) => Number(s.trim()));
    if (!Number.isInteger(seed) || !Number.isFinite(weight)) throw new ServiceError('bad_request', `infotext: Seed blend is not "seed:weight, ...": "${text}"`, { field: 'Seed blend' });
    return { seed: seed!, weight: weight! };
  });
}

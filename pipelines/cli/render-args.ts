/**
 * The render command's flags -> generation parameters (pipelines/params.ts): one flag per parameter, the
 * repeatable ones for lists (--adapter, --prompt with --prompt-weight, --seed N:W), --from-png to start from the
 * parameters an image carries (flags given override them). The mapping of every parameter to its flag is listed
 * in pipelines/PARAMETERS.md.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ServiceError } from '../../models/errors.ts';
import { readImageText } from '../codecs/image.ts';
import { parseInfotext } from '../infotext.ts';
import { DEFAULT_STEPS, parseRequestParams, type GenerationParams, type ParamDefaults } from '../params.ts';

export const USAGE = `usage: npm run render -- --prompt TEXT --out FILE [options]
  --image FILE        img2img from this image (else txt2img)
  --input-dir DIR     img2img every PNG/JPEG/WebP in DIR into the folder --out (same names)
  --video FILE        render a video through the stream pipeline into --out (an .mp4; audio kept)
  --from-png FILE     start from the parameters FILE carries (a PNG, JPEG or WebP this service or AUTOMATIC1111
                      wrote); the flags given override them
  --format F          png | jpeg | webp for --input-dir outputs (default: each input's own)
  --prompt TEXT       the prompt; repeat it to blend prompts (weights from --prompt-weight, default 1 each)
  --prompt-weight W   one per --prompt, in order
  --prompt-blend B    linear | slerp (default linear)
  --negative TEXT     negative prompt (moves guidance self to full, said in a note)
  --width N --height N  output size (multiples of 8; default: the model's size)
  --aspect X          width / height (e.g. 1.7778 for 16:9) when --width and --height are not given: the largest
                      size with that shape within the model's pixels
  --fit F             crop | pad: an input image of another shape is centre-cropped or padded (default crop)
  --steps N           denoising steps (default: the pack's; LCM 4 for txt2img, 2 for img2img, folders and video; Turbo 1)
  --strength X        img2img strength in (0, 1] (default 0.5)
  --t-index-list L    raw indices on the 50-step LCM grid, e.g. 10,30 (overrides --steps and --strength)
  --seed N[:W]        seed (default: random, printed); repeat N:W to blend seeds; image i of --count uses seed + i
  --guidance X        guidance scale gamma (default 1.2; kept within the model's range unless --strict-guidance)
  --cfg KIND          none | full | self | initialize (default: the pack's; self, Turbo none)
  --delta X           RCFG delta (default 1)
  --strict-guidance   take --guidance and --cfg as given
  --strict-size       render at --width x --height even outside the model's size range
  --budget X          compute budget in (0, 1], or auto (the prompt router picks an expert)
  --expert NAME       force one expert (GET /v1/experts lists them)
  --adapter N[:W]     merge adapter N at weight W (default 1); repeatable
  --similarity X      video: similarity filter threshold (default 0.98; 1 renders every frame)
  --max-skip-frames N video: most frames in a row the similarity filter may skip (default 10)
  --count N           number of images
  --model DIR         model pack folder (default: the embedded tiny-shapes pack)
  --provider NAME     cpu | cuda | tensorrt | dml | coreml
  --tiny-vae          use the pack's tiny VAE (taesd_encoder/taesd_decoder; an error on a pack without one)`;

export const FLAGS = {
  prompt: { type: 'string', multiple: true },
  'prompt-weight': { type: 'string', multiple: true },
  'prompt-blend': { type: 'string' },
  negative: { type: 'string' },
  out: { type: 'string' },
  image: { type: 'string' },
  'input-dir': { type: 'string' },
  video: { type: 'string' },
  'from-png': { type: 'string' },
  format: { type: 'string' },
  width: { type: 'string' },
  height: { type: 'string' },
  aspect: { type: 'string' },
  fit: { type: 'string' },
  steps: { type: 'string' },
  strength: { type: 'string' },
  't-index-list': { type: 'string' },
  seed: { type: 'string', multiple: true },
  guidance: { type: 'string' },
  cfg: { type: 'string' },
  delta: { type: 'string' },
  'strict-guidance': { type: 'boolean' },
  'strict-size': { type: 'boolean' },
  budget: { type: 'string' },
  expert: { type: 'string' },
  adapter: { type: 'string', multiple: true },
  similarity: { type: 'string' },
  'max-skip-frames': { type: 'string' },
  count: { type: 'string' },
  model: { type: 'string' },
  provider: { type: 'string' },
  'tiny-vae': { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

export type CliValues = ReturnType<typeof parseArgs<{ options: typeof FLAGS }>>['values'];

export function readFlags(argv: readonly string[]): CliValues {
  try {
    return parseArgs({ args: [...argv], options: FLAGS }).values;
  } catch (error) {
    throw new ServiceError('bad_request', (error as Error).message);
  }
}

export function number(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new ServiceError('bad_request', `--${name} must be a number, got "${value}"`, { field: name });
  return n;
}

/** "NAME" or "NAME:WEIGHT" (the weight after the last colon). */
function nameAndWeight(text: string, flag: string): { name: string; weight: number } {
  const at = text.lastIndexOf(':');
  if (at < 0) return { name: text, weight: 1 };
  return { name: text.slice(0, at), weight: number(text.slice(at + 1), flag)! };
}

/** --prompt (repeated: a blend, weighted by --prompt-weight in order). */
function prompts(values: CliValues): GenerationParams['prompt'] | undefined {
  const texts = values.prompt ?? [];
  const weights = (values['prompt-weight'] ?? []).map((w) => number(w, 'prompt-weight')!);
  if (weights.length > texts.length) throw new ServiceError('bad_request', '--prompt-weight: one per --prompt, in order', { field: 'prompt-weight' });
  if (texts.length === 0) return undefined;
  if (texts.length === 1 && weights.length === 0) return texts[0]!;
  return texts.map((text, i) => ({ text, weight: weights[i] ?? 1 }));
}

/** --seed N, or several N:W to blend; -1 (or none) is random. */
function seeds(values: CliValues): GenerationParams['seed'] | undefined {
  const list = values.seed ?? [];
  if (list.length === 0) return undefined;
  if (list.length === 1 && !list[0]!.includes(':')) return number(list[0], 'seed');
  return list.map((s) => {
    const { name, weight } = nameAndWeight(s, 'seed');
    return { seed: number(name, 'seed')!, weight };
  });
}

/** What a --from-png file says, as parameters, with notes on what it could not carry over. */
async function fromImage(path: string): Promise<{ params: Record<string, unknown>; notes: readonly string[] }> {
  const text = await readImageText(await readFile(path));
  if (text === undefined) throw new ServiceError('bad_request', `--from-png ${path} carries no generation parameters`, { field: 'from-png' });
  const parsed = parseInfotext(text);
  const notes = parsed.mode === 'img2img' ? [...parsed.notes, `${path} is an img2img render: give --image to start from an image`] : parsed.notes;
  return { params: { ...parsed.params }, notes };
}

/**
 * The generation parameters the flags ask for (seed drawn when none is given), over the parameters of --from-png
 * when given. `fromImage`: an input image is given (img2img steps default).
 */
/** Parameters from the flags; `defaults` are the model pack's for what no flag (or --from-png image) gives (params.ts packParams). */
export async function paramsFromFlags(values: CliValues, fromImageInput: boolean, defaults: ParamDefaults = {}): Promise<{ params: GenerationParams; notes: readonly string[] }> {
  const base = values['from-png'] ? await fromImage(values['from-png']) : { params: {}, notes: [] };
  const budget = values.budget === undefined || values.budget === 'auto' ? values.budget : number(values.budget, 'budget');
  const indices = values['t-index-list']?.split(/[\s,]+/).filter(Boolean).map((i) => number(i, 't-index-list')!);
  const flags: Record<string, unknown> = {
    prompt: prompts(values),
    prompt_blend: values['prompt-blend'],
    negative_prompt: values.negative,
    width: number(values.width, 'width'),
    height: number(values.height, 'height'),
    aspect: number(values.aspect, 'aspect'),
    fit: values.fit,
    steps: number(values.steps, 'steps'),
    strength: number(values.strength, 'strength'),
    t_index_list: indices,
    seed: seeds(values),
    guidance_scale: number(values.guidance, 'guidance'),
    guidance: values.cfg,
    delta: number(values.delta, 'delta'),
    strict_guidance: values['strict-guidance'],
    strict_size: values['strict-size'],
    budget,
    expert: values.expert,
    adapters: values.adapter?.map((a) => nameAndWeight(a, 'adapter')),
    similarity_threshold: number(values.similarity, 'similarity'),
    max_skip_frames: number(values['max-skip-frames'], 'max-skip-frames'),
    vae: values['tiny-vae'] ? 'tiny' : undefined,
  };
  const given = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  const merged: Record<string, unknown> = { steps: DEFAULT_STEPS[fromImageInput ? 'img2img' : 'txt2img'], ...defaults, ...base.params, ...given };
  // a new steps or strength asks for a new schedule: the image's raw t_index_list must not override it
  if (('steps' in given || 'strength' in given) && !('t_index_list' in given)) delete merged['t_index_list'];
  try {
    return { params: parseRequestParams(merged), notes: base.notes };
  } catch (error) {
    if (!(error instanceof ServiceError)) throw error;
    const flag = FLAG_OF[(error.field ?? '').split('.')[0] ?? ''];
    throw flag ? new ServiceError(error.code, `--${flag}: ${error.message}`, { cause: error, field: flag }) : error;
  }
}

/** The flag of each parameter, so that an error names what the user typed. */
export const FLAG_OF: Readonly<Record<string, string>> = {
  prompt: 'prompt',
  prompt_blend: 'prompt-blend',
  negative_prompt: 'negative',
  width: 'width',
  height: 'height',
  aspect: 'aspect',
  fit: 'fit',
  steps: 'steps',
  strength: 'strength',
  t_index_list: 't-index-list',
  seed: 'seed',
  guidance_scale: 'guidance',
  guidance: 'cfg',
  delta: 'delta',
  strict_guidance: 'strict-guidance',
  strict_size: 'strict-size',
  budget: 'budget',
  expert: 'expert',
  adapters: 'adapter',
  similarity_threshold: 'similarity',
  max_skip_frames: 'max-skip-frames',
  vae: 'tiny-vae',
};

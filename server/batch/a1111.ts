/**
 * AUTOMATIC1111-compatible endpoints (REFERENCE §7): POST /sdapi/v1/txt2img and /sdapi/v1/img2img with
 * A1111's field names and response {images: [base64 PNG], parameters, info: JSON string}; GET
 * /sdapi/v1/progress, /sdapi/v1/sd-models, /sdapi/v1/samplers, /sdapi/v1/options.
 * A1111 has many fields this service does not implement (hires fix, inpainting, scripts ...): they are
 * accepted and listed in info.unsupported_fields; a field A1111 does not know is rejected, naming it.
 */
import express from 'express';
import { z } from 'zod';
import { ServiceError } from '../../models/errors.ts';
import { encodeImage } from '../../pipelines/codecs/image.ts';
import { DEFAULT_STEPS, MAX_PROMPT_CHARS, MAX_SIDE, paramsSchema, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { asyncHandler } from '../http-errors.ts';
import { clientGone, timestamp, type Renderer, type RenderTracker } from './render.ts';
import { decodeBase64Image, dropNulls, mapParams, MAX_SEED, parseBody, resolveSeed } from './validate.ts';

/** The only sampler: LCM on the pack's 50-step grid. */
export const SAMPLER = 'LCM';
/** A1111's own default denoising strength for img2img. */
const DEFAULT_DENOISING_STRENGTH = 0.75;
/** Most images per request (batch_size x n_iter): bounds one request's hold on the UNet. */
export const MAX_IMAGES_PER_REQUEST = 64;
const MAX_STEPS = paramsSchema.shape.steps.removeDefault().maxValue ?? 8;

/** A1111 request fields this service accepts but ignores (listed back in info.unsupported_fields). */
const UNSUPPORTED_COMMON = [
  'styles', 'subseed', 'subseed_strength', 'seed_resize_from_h', 'seed_resize_from_w', 'scheduler', 'restore_faces', 'tiling',
  'do_not_save_samples', 'do_not_save_grid', 'eta', 's_min_uncond', 's_churn', 's_tmax', 's_tmin', 's_noise', 'override_settings',
  'override_settings_restore_afterwards', 'refiner_checkpoint', 'refiner_switch_at', 'disable_extra_networks', 'firstpass_image',
  'comments', 'force_task_id', 'sampler_index', 'script_name', 'script_args', 'save_images', 'alwayson_scripts', 'infotext',
] as const;
const UNSUPPORTED_TXT2IMG = [
  'enable_hr', 'firstphase_width', 'firstphase_height', 'hr_scale', 'hr_upscaler', 'hr_second_pass_steps', 'hr_resize_x', 'hr_resize_y',
  'hr_checkpoint_name', 'hr_sampler_name', 'hr_scheduler', 'hr_prompt', 'hr_negative_prompt', 'hr_additional_modules', 'denoising_strength',
] as const;
const UNSUPPORTED_IMG2IMG = [
  'resize_mode', 'image_cfg_scale', 'mask', 'mask_blur_x', 'mask_blur_y', 'mask_blur', 'mask_round', 'inpainting_fill', 'inpaint_full_res',
  'inpaint_full_res_padding', 'inpainting_mask_invert', 'initial_noise_multiplier', 'latent_mask', 'include_init_images',
] as const;

const accepted = (names: readonly string[]) => Object.fromEntries(names.map((n) => [n, z.unknown().optional()]));
const text = z.string().max(MAX_PROMPT_CHARS, `must be at most ${MAX_PROMPT_CHARS} characters`);
const side = z.number().int().min(64).max(MAX_SIDE).multipleOf(8, 'must be a multiple of 8').optional();

const supported = {
  prompt: text.default(''),
  negative_prompt: text.default(''),
  /** -1 = random; the seed used is reported in info. */
  seed: z.number().int().min(-1).max(MAX_SEED).default(-1),
  /** A1111 allows up to 150; LCM needs few, so more are clamped (and said so in info.notes). */
  steps: z.number().int().min(1).max(150).optional(),
  /** Switches to full classifier-free guidance with this scale; absent = the service's default (RCFG self). */
  cfg_scale: z.number().min(0).max(20).optional(),
  width: side,
  height: side,
  batch_size: z.number().int().min(1).max(16).default(1),
  n_iter: z.number().int().min(1).max(16).default(1),
  sampler_name: z.string().max(100).optional(),
  send_images: z.boolean().default(true),
};

const txt2imgSchema = z.object({ ...supported, ...accepted([...UNSUPPORTED_COMMON, ...UNSUPPORTED_TXT2IMG]) }).strict();
const img2imgSchema = z
  .object({
    ...supported,
    init_images: z.array(z.string().min(1, 'must be a base64 image')).min(1, 'needs at least one image').max(16),
    denoising_strength: z.number().gt(0).max(1).default(DEFAULT_DENOISING_STRENGTH),
    ...accepted([...UNSUPPORTED_COMMON, ...UNSUPPORTED_IMG2IMG]),
  })
  .strict();

type Txt2ImgRequest = z.output<typeof txt2imgSchema>;
type Img2ImgRequest = z.output<typeof img2imgSchema>;

/** Params field -> A1111 field, so a params error names the field the caller sent. */
const RENAMES = { guidance_scale: 'cfg_scale', strength: 'denoising_strength' } as const;

interface Mapped {
  readonly params: GenerationParams;
  readonly seed: number;
  readonly count: number;
  readonly notes: string[];
  readonly unsupported: string[];
}

/** A1111's LoRA prompt syntax, <lora:name> or <lora:name:weight> (a second, text-encoder weight is ignored). */
const LORA_TAG = /<lora:([^:>]+)(?::([^:>]+))?(?::[^>]*)?>/gi;

/** Takes A1111's <lora:...> tags out of a prompt: the prompt without them and the adapters they name. */
export function loraTags(prompt: string): { prompt: string; adapters: { name: string; weight: number }[] } {
  const adapters: { name: string; weight: number }[] = [];
  const text = prompt.replace(LORA_TAG, (_, name: string, weight: string | undefined) => {
    const w = weight === undefined ? 1 : Number(weight);
    if (!Number.isFinite(w)) throw new ServiceError('bad_request', `prompt: <lora:${name}:${weight}> has no numeric weight`, { field: 'prompt' });
    adapters.push({ name: name.trim(), weight: w });
    return ' ';
  });
  return { prompt: text.replace(/\s+/g, ' ').trim(), adapters };
}

function mapRequest(
  raw: Record<string, unknown>,
  request: Txt2ImgRequest,
  strength: number | undefined,
  mode: 'txt2img' | 'img2img',
  ignored: readonly string[],
): Mapped {
  const notes: string[] = [];
  const count = request.batch_size * request.n_iter;
  if (count > MAX_IMAGES_PER_REQUEST) {
    throw new ServiceError('bad_request', `n_iter: batch_size x n_iter must be at most ${MAX_IMAGES_PER_REQUEST}, got ${count}`, { field: 'n_iter' });
  }
  let steps = request.steps ?? DEFAULT_STEPS[mode];
  if (steps > MAX_STEPS) {
    notes.push(`steps ${steps} clamped to ${MAX_STEPS}: LCM needs only a few`);
    steps = MAX_STEPS;
  }
  if (request.sampler_name !== undefined && request.sampler_name.toUpperCase() !== SAMPLER) notes.push(`sampler_name "${request.sampler_name}" is not available: sampled with ${SAMPLER}`);
  const seed = resolveSeed(request.seed);
  const { prompt, adapters } = loraTags(request.prompt);
  const params = mapParams(
    {
      prompt,
      ...(adapters.length > 0 ? { adapters } : {}),
      negative_prompt: request.negative_prompt,
      seed,
      steps,
      width: request.width,
      height: request.height,
      ...(request.cfg_scale !== undefined ? { guidance: 'full', guidance_scale: request.cfg_scale } : {}),
      strength,
    },
    RENAMES,
  );
  const unsupported = Object.keys(raw).filter((k) => ignored.includes(k));
  return { params, seed, count, notes, unsupported };
}

/** A1111's infotext line for one image. */
function infotext(params: GenerationParams, seed: number, size: { width: number; height: number }, model: string, cfg: number | undefined): string {
  const neg = params.negative_prompt ? `\nNegative prompt: ${params.negative_prompt}` : '';
  const cfgText = cfg !== undefined ? `CFG scale: ${cfg}, ` : '';
  return `${String(params.prompt)}${neg}\nSteps: ${params.steps}, Sampler: ${SAMPLER}, ${cfgText}Seed: ${seed}, Size: ${size.width}x${size.height}, Model: ${model}`;
}

export function a1111Router(ctx: AppContext, tracker: RenderTracker, renderer: Renderer): express.Router {
  const router = express.Router();

  const render = (mode: 'txt2img' | 'img2img') =>
    asyncHandler(async (req, res) => {
      if (ctx.draining) throw new ServiceError('unavailable', 'the server is shutting down');
      // 1. validate and map onto generation parameters
      const raw = dropNulls(req.body) as Record<string, unknown>;
      const img: Img2ImgRequest | undefined = mode === 'img2img' ? parseBody(img2imgSchema, raw) : undefined;
      const request: Txt2ImgRequest = img ?? parseBody(txt2imgSchema, raw);
      const ignored = mode === 'txt2img' ? [...UNSUPPORTED_COMMON, ...UNSUPPORTED_TXT2IMG] : [...UNSUPPORTED_COMMON, ...UNSUPPORTED_IMG2IMG];
      const { params, seed, count, notes, unsupported } = mapRequest(raw, request, img?.denoising_strength, mode, ignored);
      const size = ctx.engine.size(params);
      // 2. decode init images at the output size
      const inits = img
        ? (await Promise.all(img.init_images.map((b64, i) => decodeBase64Image(b64, size.width, size.height, `init_images.${i}`)))).map((d) => d.data)
        : undefined;
      // 3. render (progress visible on /sdapi/v1/progress)
      const progress = tracker.begin();
      const started = new Date();
      let images;
      try {
        images = await renderer.render({
          params,
          mode,
          count,
          endpoint: `/sdapi/v1/${mode}`,
          lanes: request.batch_size,
          signal: clientGone(res),
          onStep: progress.step,
          ...(inits ? { inits } : {}),
        });
      } finally {
        progress.end();
      }
      // 4. A1111's response shape
      const model = ctx.engine.pack.name;
      const seeds = images.map((img) => img.seed);
      const texts = images.map((img) => infotext(params, img.seed, size, model, request.cfg_scale));
      const info = {
        prompt: request.prompt,
        all_prompts: images.map(() => request.prompt),
        negative_prompt: request.negative_prompt,
        all_negative_prompts: images.map(() => request.negative_prompt),
        seed,
        all_seeds: seeds,
        subseed: -1,
        all_subseeds: seeds.map(() => -1),
        subseed_strength: 0,
        width: size.width,
        height: size.height,
        sampler_name: SAMPLER,
        cfg_scale: request.cfg_scale ?? params.guidance_scale,
        guidance: params.guidance,
        steps: params.steps,
        batch_size: request.batch_size,
        n_iter: request.n_iter,
        denoising_strength: img?.denoising_strength ?? null,
        sd_model_name: model,
        sd_model_hash: null,
        job_timestamp: timestamp(started),
        infotexts: texts,
        unsupported_fields: unsupported,
        notes,
      };
      const encoded = request.send_images ? await Promise.all(images.map(async (img) => (await encodeImage(img.data, img.width, img.height, 'png')).toString('base64'))) : [];
      // A1111 echoes the request with defaults filled in, init images left out (null) to keep it small
      const parameters = { ...raw, ...request, ...(img ? { init_images: null } : {}) };
      res.json({ images: encoded, parameters, info: JSON.stringify(info) });
    });

  router.post('/sdapi/v1/txt2img', render('txt2img'));
  router.post('/sdapi/v1/img2img', render('img2img'));

  router.get('/sdapi/v1/progress', (_req, res) => {
    const s = tracker.snapshot();
    res.json({
      progress: s.progress,
      eta_relative: s.eta_relative,
      state: {
        skipped: false,
        interrupted: false,
        stopping_generation: false,
        job: s.job_count > 0 ? 'render' : '',
        job_count: s.job_count,
        job_timestamp: s.job_timestamp,
        job_no: 0,
        sampling_step: s.sampling_step,
        sampling_steps: s.sampling_steps,
      },
      current_image: null,
      textinfo: null,
    });
  });

  router.get('/sdapi/v1/sd-models', (_req, res) => {
    const pack = ctx.engine.pack;
    res.json([{ title: pack.name, model_name: pack.name, hash: null, sha256: null, filename: pack.dir, config: null }]);
  });

  router.get('/sdapi/v1/samplers', (_req, res) => {
    res.json([{ name: SAMPLER, aliases: ['lcm'], options: {} }]);
  });

  router.get('/sdapi/v1/options', (_req, res) => {
    res.json({ sd_model_checkpoint: ctx.engine.pack.name, samples_format: 'png' });
  });

  return router;
}

/**
 * AUTOMATIC1111-compatible endpoints (REFERENCE §7): POST /sdapi/v1/txt2img and /sdapi/v1/img2img with
 * A1111's field names and response {images: [base64 PNG], parameters, info: JSON string}; POST /sdapi/v1/png-info;
 * GET /sdapi/v1/progress, /sdapi/v1/sd-models, /sdapi/v1/samplers, /sdapi/v1/options.
 * What A1111 has a place for maps there: cfg_scale, denoising_strength, subseed (variation seed), <lora:> tags and
 * AND blends in the prompt; the rest of this service's parameters go in `override_settings` or in
 * `alwayson_scripts: {"StreamDiffusion": {"args": [{...}]}}` under their own names. A1111 fields this service does
 * not implement (hires fix, inpainting, scripts ...) are accepted and listed in info.unsupported_fields; a field
 * A1111 does not know is rejected, naming it. Every PNG carries A1111's `parameters` text.
 */
import express from 'express';
import { z } from 'zod';
import { ServiceError } from '../../models/errors.ts';
import type { PackDefaults } from '../../models/pack-kinds.ts';
import { readImageText } from '../../pipelines/codecs/image.ts';
import { parseInfotext, SAMPLER, writeInfotext } from '../../pipelines/infotext.ts';
import { MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MAX_STEPS, packParams, resolveSeed, type GenerationParams } from '../../pipelines/params.ts';
import { parsePrompt, variationSeeds } from '../../pipelines/prompt-syntax.ts';
import type { AppContext } from '../context.ts';
import { asyncHandler } from '../http-errors.ts';
import { encodeResult, requestSignal, timestamp, type Renderer, type RenderTracker } from './render.ts';
import { base64Bytes, decodeBase64Image, dropNulls, mapParams, parseBody } from './validate.ts';
import { refuseWhileDraining } from '../shutdown.ts';

/** A1111's own default denoising strength for img2img. */
const DEFAULT_DENOISING_STRENGTH = 0.75;
/** Most images per request (batch_size x n_iter): bounds one request's hold on the UNet. */
export const MAX_IMAGES_PER_REQUEST = 64;
/** The alwayson_scripts entry that carries this service's parameters. */
export const SCRIPT_NAME = 'StreamDiffusion';
/** Parameters A1111 has no field for, taken from override_settings or the StreamDiffusion script's args. */
export const EXTRA_PARAMS = ['guidance', 'delta', 'budget', 'expert', 'adapters', 't_index_list', 'prompt_blend', 'strict_guidance', 'strict_size', 'aspect', 'fit', 'vae'] as const;

/** A1111 request fields this service accepts but ignores (listed back in info.unsupported_fields). */
const UNSUPPORTED_COMMON = [
  'styles', 'seed_resize_from_h', 'seed_resize_from_w', 'scheduler', 'restore_faces', 'tiling',
  'do_not_save_samples', 'do_not_save_grid', 'eta', 's_min_uncond', 's_churn', 's_tmax', 's_tmin', 's_noise',
  'override_settings_restore_afterwards', 'refiner_checkpoint', 'refiner_switch_at', 'disable_extra_networks', 'firstpass_image',
  'comments', 'force_task_id', 'sampler_index', 'script_name', 'script_args', 'save_images', 'infotext',
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
const seedField = z.number().int().min(-1).max(MAX_SEED);

const supported = {
  prompt: text.default(''),
  negative_prompt: text.default(''),
  /** -1 = random; the seed used is reported in info and written into the PNG. */
  seed: seedField.default(-1),
  /** A1111's variation seed: blended in at subseed_strength (0 = off); -1 = random. */
  subseed: seedField.default(-1),
  subseed_strength: z.number().min(0).max(1).default(0),
  /** A1111 allows up to 150; LCM needs few, so more are clamped (and said so in info.notes). */
  steps: z.number().int().min(1).max(150).optional(),
  /** Full classifier-free guidance at this scale (brought into the model's range, see info.notes); absent = the service's default (RCFG self). */
  cfg_scale: z.number().min(0).max(20).optional(),
  width: side,
  height: side,
  batch_size: z.number().int().min(1).max(16).default(1),
  n_iter: z.number().int().min(1).max(16).default(1),
  sampler_name: z.string().max(100).optional(),
  send_images: z.boolean().default(true),
  /** A1111 settings for this request; this service's own parameters (EXTRA_PARAMS) are read from here. */
  override_settings: z.record(z.string(), z.unknown()).default({}),
  /** Extension scripts' arguments; {"StreamDiffusion": {"args": [{...EXTRA_PARAMS}]}} is this service's. */
  alwayson_scripts: z.record(z.string(), z.unknown()).default({}),
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

const pngInfoSchema = z.object({ image: z.string().min(1, 'must be a base64 image') }).strict();

type Txt2ImgRequest = z.output<typeof txt2imgSchema>;
type Img2ImgRequest = z.output<typeof img2imgSchema>;

const scriptSchema = z.object({ args: z.array(z.unknown()).default([]) }).passthrough();

interface Mapped {
  readonly params: GenerationParams;
  readonly seed: number;
  readonly count: number;
  readonly notes: string[];
  readonly unsupported: string[];
}

/**
 * This service's parameters from override_settings and the StreamDiffusion script (the script wins), with the
 * request field each came from (for error messages); other settings and scripts are listed as unsupported.
 */
function extraParams(request: Txt2ImgRequest): { values: Record<string, unknown>; fields: Record<string, string>; unsupported: string[] } {
  const values: Record<string, unknown> = {};
  const fields: Record<string, string> = {};
  const unsupported: string[] = [];
  const take = (source: Record<string, unknown>, prefix: string, collect: boolean) => {
    for (const [key, value] of Object.entries(source)) {
      if ((EXTRA_PARAMS as readonly string[]).includes(key)) {
        values[key] = value;
        fields[key] = `${prefix}.${key}`;
      } else if (collect) unsupported.push(`${prefix}.${key}`);
    }
  };
  take(request.override_settings, 'override_settings', true);
  for (const [name, script] of Object.entries(request.alwayson_scripts)) {
    if (name.toLowerCase() !== SCRIPT_NAME.toLowerCase()) {
      unsupported.push(`alwayson_scripts.${name}`);
      continue;
    }
    const args = scriptSchema.safeParse(script);
    const first = args.success ? args.data.args[0] : undefined;
    if (first === undefined) continue;
    if (typeof first !== 'object' || first === null || Array.isArray(first)) {
      throw new ServiceError('bad_request', `alwayson_scripts.${name}.args.0: must be an object of parameters (${EXTRA_PARAMS.join(', ')})`, { field: `alwayson_scripts.${name}.args.0` });
    }
    const prefix = `alwayson_scripts.${name}.args.0`;
    for (const key of Object.keys(first)) {
      if (!(EXTRA_PARAMS as readonly string[]).includes(key)) throw new ServiceError('bad_request', `${prefix}: unknown field(s): ${key}`, { field: `${prefix}.${key}` });
    }
    take(first as Record<string, unknown>, prefix, false);
  }
  return { values, fields, unsupported };
}

function mapRequest(
  defaults: PackDefaults,
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
  let steps = request.steps ?? packParams(defaults, mode).steps;
  if (steps > MAX_STEPS) {
    notes.push(`steps ${steps} clamped to ${MAX_STEPS}: LCM needs only a few`);
    steps = MAX_STEPS;
  }
  if (request.sampler_name !== undefined && request.sampler_name.toUpperCase() !== SAMPLER) notes.push(`sampler_name "${request.sampler_name}" is not available: sampled with ${SAMPLER}`);
  const seed = resolveSeed(request.seed);
  const subseed = request.subseed_strength > 0 ? resolveSeed(request.subseed) : undefined;
  const { prompt, adapters } = parsePrompt(request.prompt, { blends: true });
  const extra = extraParams(request);
  const tagged = [...adapters, ...((extra.values['adapters'] as unknown[] | undefined) ?? [])];
  const params = mapParams(
    {
      prompt,
      negative_prompt: request.negative_prompt,
      seed: subseed !== undefined ? variationSeeds(seed, subseed, request.subseed_strength) : seed,
      steps,
      width: request.width,
      height: request.height,
      ...(request.cfg_scale !== undefined ? { guidance: 'full', guidance_scale: request.cfg_scale } : {}),
      strength,
      ...extra.values,
      ...(tagged.length > 0 ? { adapters: tagged } : {}),
    },
    { guidance_scale: 'cfg_scale', strength: 'denoising_strength', seed: subseed !== undefined ? 'subseed' : 'seed', ...extra.fields },
    packParams(defaults, mode),
  );
  const unsupported = [...Object.keys(raw).filter((k) => ignored.includes(k)), ...extra.unsupported];
  return { params, seed, count, notes, unsupported };
}

export function a1111Router(ctx: AppContext, tracker: RenderTracker, renderer: Renderer): express.Router {
  const router = express.Router();

  const render = (mode: 'txt2img' | 'img2img') =>
    asyncHandler(async (req, res) => {
      refuseWhileDraining(ctx.draining);
      // 1. validate and map onto generation parameters
      const raw = dropNulls(req.body) as Record<string, unknown>;
      const img: Img2ImgRequest | undefined = mode === 'img2img' ? parseBody(img2imgSchema, raw) : undefined;
      const request: Txt2ImgRequest = img ?? parseBody(txt2imgSchema, raw);
      const ignored = mode === 'txt2img' ? [...UNSUPPORTED_COMMON, ...UNSUPPORTED_TXT2IMG] : [...UNSUPPORTED_COMMON, ...UNSUPPORTED_IMG2IMG];
      const { params, seed, count, notes, unsupported } = mapRequest(ctx.engine.pack.defaults, raw, request, img?.denoising_strength, mode, ignored);
      const plan = await ctx.plan(params, mode);
      const { size } = plan;
      const progress = tracker.begin();
      const started = new Date();
      let images;
      try {
        // 2. decode init images at the size the model runs at
        const inits = img
          ? (await Promise.all(img.init_images.map((b64, i) => decodeBase64Image(b64, size.width, size.height, `init_images.${i}`, params.fit)))).map((d) => d.data)
          : undefined;
        // 3. render (progress visible on /sdapi/v1/progress)
        images = await renderer.render({
          params,
          mode,
          plan,
          count,
          endpoint: `/sdapi/v1/${mode}`,
          lanes: request.batch_size,
          signal: requestSignal(ctx, res),
          onStep: progress.step,
          ...(inits ? { inits } : {}),
        });
      } finally {
        progress.end();
        plan.release();
      }
      // 4. A1111's response shape, with what was used (guidance after the model's range, the expert that served)
      const model = ctx.engine.pack.name;
      const seeds = images.map((img) => img.seed);
      const subseeds = typeof params.seed === 'number' ? seeds.map(() => -1) : images.map((img) => ((params.seed as { seed: number }[])[1]!.seed + img.index) % 2 ** 32);
      const { guidance } = plan;
      const info = {
        prompt: request.prompt,
        all_prompts: images.map(() => request.prompt),
        negative_prompt: request.negative_prompt,
        all_negative_prompts: images.map(() => request.negative_prompt),
        seed,
        all_seeds: seeds,
        subseed: subseeds[0] ?? -1,
        all_subseeds: subseeds,
        subseed_strength: typeof params.seed === 'number' ? 0 : request.subseed_strength,
        width: plan.outputSize.width,
        height: plan.outputSize.height,
        sampler_name: SAMPLER,
        cfg_scale: guidance.kind === 'none' ? 1 : guidance.scale,
        guidance: guidance.kind,
        steps: plan.coefficients.timesteps.length,
        batch_size: request.batch_size,
        n_iter: request.n_iter,
        denoising_strength: img?.denoising_strength ?? null,
        sd_model_name: model,
        sd_model_hash: null,
        expert: images[0]?.variant.expert ?? null,
        adapters: images[0]?.variant.adapters ?? [],
        job_timestamp: timestamp(started),
        infotexts: images.map((image) => writeInfotext(plan, image, model)),
        unsupported_fields: unsupported,
        notes: [...notes, ...plan.notes],
      };
      const encoded = request.send_images ? await Promise.all(images.map(async (image) => (await encodeResult(ctx, plan, image, 'png')).toString('base64'))) : [];
      // A1111 echoes the request with defaults filled in, init images left out (null) to keep it small
      const parameters = { ...raw, ...request, ...(img ? { init_images: null } : {}) };
      res.json({ images: encoded, parameters, info: JSON.stringify(info) });
    });

  router.post('/sdapi/v1/txt2img', render('txt2img'));
  router.post('/sdapi/v1/img2img', render('img2img'));

  // A1111's PNG Info: the parameters text an image carries, read as A1111 reads it, and in this service's vocabulary
  router.post(
    '/sdapi/v1/png-info',
    asyncHandler(async (req, res) => {
      const { image } = parseBody(pngInfoSchema, req.body);
      const bytes = base64Bytes(image, 'image');
      const text = await readImageText(bytes).catch((error: unknown) => {
        throw error instanceof ServiceError ? new ServiceError(error.code, `image: ${error.message}`, { cause: error, field: 'image' }) : error;
      });
      if (text === undefined) {
        res.json({ info: '', items: {}, parameters: {}, params: null, mode: null, notes: ['the image carries no generation parameters'] });
        return;
      }
      const parsed = parseInfotext(text);
      res.json({ info: text, items: { parameters: text }, parameters: parsed.fields, params: parsed.params, mode: parsed.mode, notes: parsed.notes });
    }),
  );

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

/**
 * OpenAI Images-compatible endpoints (REFERENCE §7): POST /v1/images/generations (JSON) and
 * /v1/images/edits (multipart: image or image[], prompt, n, size ...) -> {created, data: [{b64_json} | {url}]}.
 * The official `openai` SDK works against them with only its baseURL changed. OpenAI fields with no meaning
 * here (quality, style, background, moderation, user, mask ...) are accepted and ignored. Extensions: every
 * generation parameter of this service under its own name (EXTENSIONS: seed, steps, negative_prompt, guidance,
 * budget, adapters ...; a multipart form sends lists and objects as JSON text), <lora:name:weight> tags in the
 * prompt, and in the answer each image's `seed` and the request's `notes`. Images carry their parameters
 * (a PNG text chunk, XMP/EXIF in JPEG and WebP).
 */
import express from 'express';
import { z } from 'zod';
import { ServiceError } from '../../models/errors.ts';
import { MAX_PROMPT_CHARS, packParams, resolveSeed, type GenerationParams } from '../../pipelines/params.ts';
import type { Mode, Plan } from '../../pipelines/plan.ts';
import { parsePrompt, type AdapterChoice } from '../../pipelines/prompt-syntax.ts';
import type { AppContext } from '../context.ts';
import { asyncHandler } from '../http-errors.ts';
import { encodeResult, requestSignal, type Renderer, type RenderTracker } from './render.ts';
import type { ResultStore } from './results.ts';
import { imageUpload } from './uploads.ts';
import { decodeBytes, jsonOrText, mapParams, parseBody } from './validate.ts';
import { refuseWhileDraining } from '../shutdown.ts';

/** OpenAI's own limit on n. */
export const MAX_N = 10;

/**
 * Generation parameters taken under their own names (prompt is OpenAI's; width and height are another way to say
 * size, so that parameters read from an image go back as they are; the rest are for streams).
 */
export const EXTENSIONS = [
  'negative_prompt', 'seed', 'steps', 'strength', 't_index_list', 'guidance', 'guidance_scale', 'delta', 'prompt_blend',
  'budget', 'expert', 'adapters', 'strict_guidance', 'strict_size', 'width', 'height', 'aspect', 'fit', 'vae',
] as const satisfies readonly (keyof GenerationParams)[];
/** Extensions whose values are text even when they look like JSON. */
const TEXT_EXTENSIONS: readonly string[] = ['negative_prompt', 'guidance', 'prompt_blend', 'expert', 'fit', 'vae'];

/** A number, also from a multipart form field's text. */
const num = <T extends z.ZodTypeAny>(schema: T) => z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v)) ? Number(v) : v), schema);

const promptText = z.string().min(1, 'is required').max(MAX_PROMPT_CHARS, `must be at most ${MAX_PROMPT_CHARS} characters`);

const common = {
  /** OpenAI's text, or (extension) a weighted list of prompts to blend. */
  prompt: z.union([promptText, z.array(z.object({ text: z.string(), weight: z.number() }).passthrough())]),
  model: z.string().max(200).optional(),
  n: num(z.number().int().min(1).max(MAX_N)).default(1),
  size: z
    .string()
    .regex(/^(auto|\d{1,5}x\d{1,5})$/, 'must be "WIDTHxHEIGHT" (e.g. "512x512") or "auto"')
    .default('auto'),
  response_format: z.enum(['b64_json', 'url']).default('b64_json'),
  output_format: z.enum(['png', 'jpeg', 'webp']).default('png'),
  /** 0-100: the JPEG/WebP quality. */
  output_compression: num(z.number().int().min(0).max(100)).optional(),
  stream: z
    .preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean())
    .refine((v) => !v, 'streaming responses are not supported')
    .optional(),
  // accepted, no effect here
  quality: z.string().max(20).optional(),
  style: z.string().max(20).optional(),
  background: z.string().max(20).optional(),
  moderation: z.string().max(20).optional(),
  user: z.string().max(200).optional(),
  partial_images: num(z.number().int().min(0).max(3)).optional(),
  // extensions, checked by the parameters' own schema when mapped
  ...Object.fromEntries(EXTENSIONS.map((k) => [k, TEXT_EXTENSIONS.includes(k) ? z.unknown().optional() : z.preprocess(jsonOrText, z.unknown()).optional()])),
};

const generationsSchema = z.object(common).strict();
const editsSchema = z
  .object({
    ...common,
    input_fidelity: z.string().max(20).optional(),
  })
  .strict();

type ImagesRequest = z.output<typeof generationsSchema> & Partial<Record<(typeof EXTENSIONS)[number], unknown>>;

function parseSize(size: string, ctx: AppContext, request: ImagesRequest): { width?: number; height?: number } {
  if (size === 'auto') return {};
  if (request.width !== undefined || request.height !== undefined) throw new ServiceError('bad_request', 'size: give size or width and height, not both', { field: 'size' });
  const [w, h] = size.split('x').map(Number);
  ctx.engine.size({ width: w!, height: h! }); // the pack's multiple, naming width/height
  return { width: w!, height: h! };
}

/** The prompt without its <lora:> tags (each text of a blend may carry some), and the adapters they name. */
function promptAndTags(prompt: ImagesRequest['prompt']): { prompt: GenerationParams['prompt']; adapters: AdapterChoice[] } {
  if (typeof prompt === 'string') return parsePrompt(prompt, { blends: false });
  const adapters: AdapterChoice[] = [];
  const parts = (prompt as { text: string; weight: number }[]).map((p) => {
    const parsed = parsePrompt(p.text, { blends: false });
    adapters.push(...parsed.adapters);
    return { ...p, text: parsed.prompt as string };
  });
  return { prompt: parts, adapters };
}

function toParams(request: ImagesRequest, ctx: AppContext, mode: 'generations' | 'edits'): GenerationParams {
  try {
    const size = parseSize(request.size, ctx, request);
    const { prompt, adapters } = promptAndTags(request.prompt);
    const extensions = Object.fromEntries(EXTENSIONS.map((k) => [k, request[k]]));
    const listed = Array.isArray(extensions['adapters']) ? (extensions['adapters'] as unknown[]) : [];
    return mapParams({
      ...extensions,
      prompt,
      seed: resolveSeed(extensions['seed']),
      ...(adapters.length > 0 ? { adapters: [...adapters, ...listed] } : {}),
      ...size,
    }, {}, packParams(ctx.engine.pack.defaults, mode === 'generations' ? 'txt2img' : 'img2img'));
  } catch (error) {
    // width/height errors are about the size field
    if (error instanceof ServiceError && (error.field === 'width' || error.field === 'height')) {
      throw new ServiceError('bad_request', `size: ${error.message.replace(/^(width|height): /, '')}`, { cause: error, field: 'size' });
    }
    throw error;
  }
}

export function openaiRouter(ctx: AppContext, tracker: RenderTracker, results: ResultStore, renderer: Renderer): express.Router {
  const router = express.Router();

  /** Renders a request planned from `params` in `mode` and answers; the plan is released once rendered (whatever happens). */
  const respond = async (req: express.Request, res: express.Response, request: ImagesRequest, planned: { params: GenerationParams; mode: Mode; plan: Plan }, inits: () => Promise<Float32Array[] | undefined>, endpoint: string) => {
    const { plan } = planned;
    const progress = tracker.begin();
    let images;
    try {
      const init = await inits();
      images = await renderer.render({ ...planned, count: request.n, endpoint, signal: requestSignal(ctx, res), onStep: progress.step, ...(init ? { inits: init } : {}) });
    } finally {
      progress.end();
      plan.release();
    }
    const format = request.output_format;
    const quality = Math.max(1, request.output_compression ?? 85);
    const base = `${req.protocol}://${req.get('host')}`;
    const data = await Promise.all(
      images.map(async (img) => {
        const bytes = await encodeResult(ctx, plan, img, format, quality);
        if (request.response_format === 'url') return { url: `${base}/v1/images/results/${await results.put(bytes, format)}`, seed: img.seed };
        return { b64_json: bytes.toString('base64'), seed: img.seed };
      }),
    );
    const first = images[0]!;
    res.json({ created: Math.floor(Date.now() / 1000), data, output_format: format, size: `${first.width}x${first.height}`, notes: plan.notes });
  };

  router.post(
    '/v1/images/generations',
    asyncHandler(async (req, res) => {
      refuseWhileDraining(ctx.draining);
      const request = parseBody(generationsSchema, req.body);
      const params = toParams(request, ctx, 'generations');
      await respond(req, res, request, { params, mode: 'txt2img', plan: await ctx.plan(params, 'txt2img') }, () => Promise.resolve(undefined), '/v1/images/generations');
    }),
  );

  router.post(
    '/v1/images/edits',
    imageUpload(ctx.config),
    asyncHandler(async (req, res) => {
      refuseWhileDraining(ctx.draining);
      if (!req.is('multipart/form-data')) throw new ServiceError('bad_request', 'image: /v1/images/edits takes multipart/form-data with an image file', { field: 'image' });
      const request = parseBody(editsSchema, { ...(req.body as Record<string, unknown>) });
      const files = req.files as Record<string, Express.Multer.File[]> | undefined;
      const uploads = [...(files?.['image'] ?? []), ...(files?.['image[]'] ?? [])];
      if (uploads.length === 0) throw new ServiceError('bad_request', 'image: is required (a PNG, JPEG or WebP file)', { field: 'image' });
      const params = toParams(request, ctx, 'edits');
      const plan = await ctx.plan(params, 'img2img');
      const { width, height } = plan.size;
      const field = (i: number) => (uploads.length > 1 ? `image.${i}` : 'image');
      const inits = () => Promise.all(uploads.map(async (f, i) => (await decodeBytes(f.buffer, width, height, field(i), plan.params.fit)).data));
      await respond(req, res, request, { params, mode: 'img2img', plan }, inits, '/v1/images/edits');
    }),
  );

  // from this node's folder, or (a cluster) from Redis: every node serves every result
  router.get(
    '/v1/images/results/:name',
    asyncHandler(async (req, res) => {
      const name = String(req.params['name']);
      const found = await results.locate(name);
      if ('path' in found) res.sendFile(found.path);
      else res.type(name.slice(name.lastIndexOf('.'))).send(found.bytes);
    }),
  );

  return router;
}

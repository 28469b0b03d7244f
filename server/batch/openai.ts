/**
 * OpenAI Images-compatible endpoints (REFERENCE §7): POST /v1/images/generations (JSON) and
 * /v1/images/edits (multipart: image or image[], prompt, n, size ...) -> {created, data: [{b64_json} | {url}]}.
 * The official `openai` SDK works against them with only its baseURL changed. OpenAI fields with no meaning
 * here (quality, style, background, moderation, user, mask ...) are accepted and ignored; extensions:
 * seed, steps, negative_prompt, and strength (edits).
 */
import express from 'express';
import { z } from 'zod';
import { ServiceError } from '../../models/errors.ts';
import { encodeImage } from '../../pipelines/codecs/image.ts';
import { DEFAULT_STEPS, MAX_PROMPT_CHARS, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { asyncHandler } from '../http-errors.ts';
import { clientGone, type Renderer, type RenderTracker } from './render.ts';
import type { ResultStore } from './results.ts';
import { imageUpload } from './uploads.ts';
import { decodeBytes, mapParams, MAX_SEED, parseBody } from './validate.ts';

/** OpenAI's own limit on n. */
export const MAX_N = 10;

/** A number, also from a multipart form field's text. */
const num = <T extends z.ZodTypeAny>(schema: T) => z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v)) ? Number(v) : v), schema);

const common = {
  prompt: z.string().min(1, 'is required').max(MAX_PROMPT_CHARS, `must be at most ${MAX_PROMPT_CHARS} characters`),
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
  // extensions
  seed: num(z.number().int().min(0).max(MAX_SEED)).optional(),
  steps: num(z.number().int().min(1).max(8)).optional(),
  negative_prompt: z.string().max(MAX_PROMPT_CHARS).optional(),
};

const generationsSchema = z.object(common).strict();
const editsSchema = z
  .object({
    ...common,
    input_fidelity: z.string().max(20).optional(),
    strength: num(z.number().gt(0).max(1)).optional(),
  })
  .strict();

type ImagesRequest = z.output<typeof generationsSchema> & { strength?: number };

function parseSize(size: string, ctx: AppContext): { width?: number; height?: number } {
  if (size === 'auto') return {};
  const [w, h] = size.split('x').map(Number);
  ctx.engine.size({ width: w!, height: h! }); // the pack's multiple, naming width/height
  return { width: w!, height: h! };
}

function toParams(request: ImagesRequest, ctx: AppContext, mode: 'generations' | 'edits'): GenerationParams {
  try {
    const size = parseSize(request.size, ctx);
    return mapParams({
      prompt: request.prompt,
      negative_prompt: request.negative_prompt,
      seed: request.seed,
      steps: request.steps ?? DEFAULT_STEPS[mode === 'generations' ? 'txt2img' : 'img2img'],
      strength: request.strength,
      ...size,
    });
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

  const respond = async (req: express.Request, res: express.Response, request: ImagesRequest, params: GenerationParams, inits: Float32Array[] | undefined, endpoint: string) => {
    const progress = tracker.begin();
    const mode = inits ? 'img2img' : 'txt2img';
    let images;
    try {
      images = await renderer.render({ params, mode, count: request.n, endpoint, signal: clientGone(res), onStep: progress.step, ...(inits ? { inits } : {}) });
    } finally {
      progress.end();
    }
    const format = request.output_format;
    const quality = request.output_compression ?? 85;
    const base = `${req.protocol}://${req.get('host')}`;
    const data = await Promise.all(
      images.map(async (img) => {
        const bytes = await encodeImage(img.data, img.width, img.height, format, Math.max(1, quality));
        if (request.response_format === 'url') return { url: `${base}/v1/images/results/${await results.put(bytes, format)}` };
        return { b64_json: bytes.toString('base64') };
      }),
    );
    const first = images[0]!;
    res.json({ created: Math.floor(Date.now() / 1000), data, output_format: format, size: `${first.width}x${first.height}` });
  };

  router.post(
    '/v1/images/generations',
    asyncHandler(async (req, res) => {
      if (ctx.draining) throw new ServiceError('unavailable', 'the server is shutting down');
      const request = parseBody(generationsSchema, req.body);
      await respond(req, res, request, toParams(request, ctx, 'generations'), undefined, '/v1/images/generations');
    }),
  );

  router.post(
    '/v1/images/edits',
    imageUpload(ctx.config),
    asyncHandler(async (req, res) => {
      if (ctx.draining) throw new ServiceError('unavailable', 'the server is shutting down');
      if (!req.is('multipart/form-data')) throw new ServiceError('bad_request', 'image: /v1/images/edits takes multipart/form-data with an image file', { field: 'image' });
      const request = parseBody(editsSchema, { ...(req.body as Record<string, unknown>) });
      const files = req.files as Record<string, Express.Multer.File[]> | undefined;
      const uploads = [...(files?.['image'] ?? []), ...(files?.['image[]'] ?? [])];
      if (uploads.length === 0) throw new ServiceError('bad_request', 'image: is required (a PNG, JPEG or WebP file)', { field: 'image' });
      const params = toParams(request, ctx, 'edits');
      const { width, height } = ctx.engine.size(params);
      const inits = await Promise.all(uploads.map(async (f, i) => (await decodeBytes(f.buffer, width, height, uploads.length > 1 ? `image.${i}` : 'image')).data));
      await respond(req, res, request, params, inits, '/v1/images/edits');
    }),
  );

  router.get('/v1/images/results/:name', async (req, res) => {
    const name = String(req.params['name']);
    const found = await results.locate(name);
    if ('path' in found) res.sendFile(found.path);
    else res.type(name.slice(name.lastIndexOf('.'))).send(found.bytes);
  });

  return router;
}

/**
 * POST /v1/jobs bodies. The generation parameters sit at the top level beside the job's own fields:
 *   {"kind": "images", "count": 16, "prompt": "...", "steps": 2, "seed": 7, "webhook": "http://..."}
 *   {"kind": "video", "path": "clips/in.mp4", "prompt": "...", "strength": 0.5}
 * A video may instead be uploaded as multipart/form-data: the file in field `video`, the other fields as
 * form fields (numbers and booleans are read as JSON).
 */
import { z } from 'zod';
import { isRecord } from '../../../models/files.ts';
import type { PackDefaults } from '../../../models/pack-kinds.ts';
import { DEFAULT_LANES } from '../../../pipelines/generate.ts';
import { packParams, paramsSchema, parseRequestParams, withDefaults, RANDOM_SEED, type GenerationParams } from '../../../pipelines/params.ts';
import { PROVIDERS, type Provider } from '../../../models/runtime/onnx.ts';
import { jsonOrText, parseBody } from '../validate.ts';

/** Most images in one job (each job checkpoints per UNet batch, so a large one only takes long). */
export const MAX_JOB_IMAGES = 1000;

const webhook = z
  .string()
  .max(2048)
  .refine((v) => {
    try {
      const url = new URL(v);
      return url.protocol === 'http:' || url.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an http(s) URL')
  .optional();

/** Run on workers of this execution provider only (a cluster; a single node runs on its own). */
const provider = z.enum(PROVIDERS).optional();

/** -1 or none asks for a random seed (resolved at acceptance, so a resumed job keeps it). */
const seed = z.union([z.literal(RANDOM_SEED), paramsSchema.shape.seed.removeDefault()]).optional();

const imagesSchema = paramsSchema
  .extend({
    kind: z.literal('images'),
    count: z.number().int().min(1).max(MAX_JOB_IMAGES).default(1),
    /** Images per UNet call. */
    lanes: z.number().int().min(1).max(16).default(DEFAULT_LANES),
    output_format: z.enum(['png', 'jpeg', 'webp']).default('png'),
    /** img2img: a base64 image (data: URL allowed); every image starts from it. */
    init_image: z.string().min(1).optional(),
    seed,
    webhook,
    provider,
  })
  .strict();

const videoSchema = paramsSchema
  .extend({
    kind: z.literal('video'),
    /** A server-side file under one of the allowed video folders (absolute, or relative to one of them). */
    path: z.string().min(1).max(4096).optional(),
    /** A video is rendered one frame at a time. */
    frame_buffer_size: z.literal(1).default(1),
    seed,
    webhook,
    provider,
  })
  .strict();

export interface ImagesJobRequest {
  readonly params: GenerationParams;
  readonly count: number;
  readonly lanes: number;
  readonly output_format: 'png' | 'jpeg' | 'webp';
  /** File name of the init image in the job folder (img2img). */
  readonly init_file: string | null;
  readonly provider?: Provider | undefined;
}

export interface VideoJobRequest {
  readonly params: GenerationParams;
  /** The resolved server-side path, or the uploaded file's name in the job folder. */
  readonly source: { readonly path: string } | { readonly upload: string };
  readonly provider?: Provider | undefined;
}

export type ParsedJob =
  | { kind: 'images'; request: Omit<ImagesJobRequest, 'init_file'>; initImage: string | undefined; webhook: string | undefined }
  | { kind: 'video'; params: GenerationParams; path: string | undefined; webhook: string | undefined; provider: Provider | undefined };

/** Generation parameters with the job's seed: none or -1 is drawn now (a resumed job keeps it). */
function withSeed(params: Record<string, unknown>, seed: unknown): GenerationParams {
  return parseRequestParams({ ...params, seed });
}

/**
 * Validates a job body (JSON, or multipart fields already coerced). Absent steps and guidance are the pack's for
 * streamed work (jobs take the stream's default steps, as the WebSocket does).
 */
export function parseJob(input: unknown, defaults: PackDefaults): ParsedJob {
  const kind = typeof input === 'object' && input !== null ? (input as { kind?: unknown }).kind : undefined;
  const body = isRecord(input) ? withDefaults(input, packParams(defaults, 'stream')) : input;
  if (kind === 'video') {
    const { kind: _kind, path, webhook: hook, seed: s, provider: p, ...params } = parseBody(videoSchema, body);
    return { kind: 'video', params: withSeed(params, s), path, webhook: hook, provider: p };
  }
  if (kind !== 'images') parseBody(z.object({ kind: z.enum(['images', 'video']) }).passthrough(), body);
  const { kind: _kind, count, lanes, output_format, init_image, webhook: hook, seed: s, provider: p, ...params } = parseBody(imagesSchema, body);
  return { kind: 'images', request: { params: withSeed(params, s), count, lanes, output_format, ...(p ? { provider: p } : {}) }, initImage: init_image, webhook: hook };
}

/** Fields that are always text in a multipart form; any other field is read as JSON when it parses. */
const TEXT_FIELDS = new Set(['kind', 'prompt', 'negative_prompt', 'path', 'webhook', 'provider']);

/** Multipart form fields -> a JSON-like body (`steps=2` -> 2, `prompt=123` stays "123"). */
export function coerceFormFields(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, TEXT_FIELDS.has(key) ? value : jsonOrText(value)]));
}

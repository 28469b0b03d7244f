/**
 * Request validation shared by the batch routers: zod bodies whose errors name the field, the mapping of
 * foreign field names (A1111, OpenAI) onto GenerationParams with errors renamed back, base64 images.
 */
import type { z } from 'zod';
import { ServiceError } from '../../models/errors.ts';
import { isRecord } from '../../models/files.ts';
import { parseParams, type GenerationParams, type ParamDefaults } from '../../pipelines/params.ts';
import { decodeImage, type DecodedImage, type Fit } from '../../pipelines/codecs/image.ts';

function fieldOf(issue: z.ZodIssue): string {
  return issue.code === 'unrecognized_keys' ? issue.keys[0]! : issue.path.join('.') || '(body)';
}

/** Parses `body` with a strict zod schema; the first problem becomes a 400 naming its field. */
export function parseBody<S extends z.ZodTypeAny>(schema: S, body: unknown): z.output<S> {
  if (!isRecord(body)) {
    throw new ServiceError('bad_request', 'the request body must be a JSON object (Content-Type: application/json)');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data as z.output<S>;
  const issue = result.error.issues[0]!;
  const field = fieldOf(issue);
  const message = issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : `${field}: ${issue.message}`;
  throw new ServiceError('bad_request', message, { field });
}

/** A multipart form field's text read as JSON when it is JSON ("0.6", "true", "[...]"), else kept as text. */
export function jsonOrText(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/** A copy without null-valued keys: clients of A1111 send null for "not set". */
export function dropNulls(body: unknown): unknown {
  if (!isRecord(body)) return body;
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
}

/**
 * parseParams for a request whose fields have other names: an error about a params field is reported
 * under the request's name for it (`renames`: params field -> request field; adapters.1.weight is renamed by
 * its first part).
 */
export function mapParams(input: Record<string, unknown>, renames: Readonly<Record<string, string>> = {}, defaults: ParamDefaults = {}): GenerationParams {
  try {
    return parseParams(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)), defaults);
  } catch (error) {
    const [head = '', ...rest] = error instanceof ServiceError && error.field ? error.field.split('.') : [];
    if (!(error instanceof ServiceError) || !renames[head]) throw error;
    const field = [renames[head]!, ...rest].join('.');
    throw new ServiceError(error.code, error.message.replace(new RegExp(`^${error.field}\\b`), field), { cause: error, field });
  }
}

const DATA_URL = /^data:[\w/+.-]+;base64,/;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** The bytes of a base64 image (a data: URL prefix is allowed). */
export function base64Bytes(text: string, field: string): Buffer {
  const payload = text.replace(DATA_URL, '').replace(/\s+/g, '');
  if (payload.length === 0 || !BASE64.test(payload)) throw new ServiceError('bad_image', `${field}: not a base64 image`, { field });
  return Buffer.from(payload, 'base64');
}

/** Decodes a base64 image (a data: URL prefix is allowed) to a tensor at width x height (`fit` for the rest). */
export async function decodeBase64Image(text: string, width: number, height: number, field: string, fit: Fit = 'crop'): Promise<DecodedImage> {
  return decodeBytes(base64Bytes(text, field), width, height, field, fit);
}

/** decodeImage with the field named in its errors. */
export async function decodeBytes(bytes: Uint8Array, width: number, height: number, field: string, fit: Fit = 'crop'): Promise<DecodedImage> {
  try {
    return await decodeImage(bytes, width, height, { fit });
  } catch (error) {
    if (!(error instanceof ServiceError)) throw error;
    throw new ServiceError(error.code, `${field}: ${error.message}`, { cause: error, field });
  }
}

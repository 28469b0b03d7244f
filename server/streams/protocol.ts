/**
 * The stream protocol's messages (server/PROTOCOL.md describes them for clients). Client text messages are
 * JSON validated here; binary messages are frames.
 */
import { z } from 'zod';
import { ServiceError, toServiceError, type ErrorCode } from '../../models/errors.ts';

export const PROTOCOL_VERSION = 1;

/**
 * Largest text (control) message, bytes, before and after start: a start with a 2000-character prompt, a
 * negative prompt and every other parameter takes under 5 KiB. Checked before the JSON is parsed.
 */
export const MAX_CONTROL_BYTES = 16 * 1024;

/** WebSocket close codes the server uses (PROTOCOL.md). */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001, // server shutting down
  policy: 1008, // unauthorized or forbidden
  tooBig: 1009, // a message far over the frame limit, or a text message over MAX_CONTROL_BYTES before start
  internal: 1011,
  tryAgainLater: 1013, // too many streams
  badStart: 4400, // the first message was not a valid start
  nameTaken: 4409, // another running stream has the name asked for
} as const;

/** Stream names (stable output URLs): a short slug, lower-case letters and digits, '-' and '_' inside. */
export const STREAM_NAME = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
export const STREAM_NAME_RULE = 'must be 1-64 lower-case letters, digits, - and _ (starting and ending with a letter or digit)';

/** The close code for a stream that cannot start: too many streams is worth retrying later, the rest is not. */
export function closeCodeFor(error: ServiceError): number {
  switch (error.code) {
    case 'rate_limited':
    case 'unavailable':
      return CLOSE.tryAgainLater;
    case 'unauthorized':
    case 'forbidden':
      return CLOSE.policy;
    case 'conflict': // the only conflict a start can meet: its name is taken
      return CLOSE.nameTaken;
    default:
      return CLOSE.badStart;
  }
}

/** An `error` message: the stable code, a message, the field it is about (if any), the input frame it failed. */
export interface ErrorMessage {
  readonly type: 'error';
  readonly code: ErrorCode;
  readonly message: string;
  readonly field?: string;
  readonly input_id: number | null;
}

/** The one place errors become `error` messages on a stream's socket. */
export function errorMessage(error: unknown, inputId: number | null = null): ErrorMessage {
  const e = toServiceError(error);
  return { type: 'error', code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}), input_id: inputId };
}

const outputSchema = z
  .object({
    format: z.enum(['jpeg', 'webp']).default('jpeg'),
    quality: z.number().int().min(1).max(100).default(80),
  })
  .strict();

/** A stream's timing targets (server/streams/targets.ts): the frame rate it wants and the latency it accepts. */
const targetFields = {
  target_fps: z.number().min(1).max(120).optional(),
  max_latency_ms: z.number().int().min(10).max(10_000).optional(),
};

/** What the load valve (pipelines/load-valve.ts) may do to a stream: nothing (`degrade: false`), or down to a budget. */
const valveFields = {
  degrade: z.boolean().optional(),
  min_budget: z.number().min(0).max(1).optional(),
};

export const clientMessageSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('start'),
      params: z.record(z.string(), z.unknown()).default({}),
      output: outputSchema.default({ format: 'jpeg', quality: 80 }),
      /** Output frames the server may send before the client acks (credit-based flow control). */
      window: z.number().int().min(1).max(16).default(2),
      /** txt2img stream: no input frames, the server generates continuously within the window. */
      mode: z.enum(['img2img', 'txt2img']).default('img2img'),
      /** A name for stable output URLs (/v1/streams/by-name/NAME/mjpeg) that outlive the stream. */
      name: z.string().regex(STREAM_NAME, STREAM_NAME_RULE).optional(),
      ...targetFields,
      ...valveFields,
    })
    .strict(),
  z
    .object({
      type: z.literal('update'),
      params: z.record(z.string(), z.unknown()).default({}),
      // null clears a target
      target_fps: targetFields.target_fps.nullable(),
      max_latency_ms: targetFields.max_latency_ms.nullable(),
      ...valveFields,
    })
    .strict(),
  z.object({ type: z.literal('ack'), frames: z.number().int().min(1).max(64).default(1) }).strict(),
  z.object({ type: z.literal('stop') }).strict(),
  z.object({ type: z.literal('ping') }).strict(),
]);

export type ClientMessage = z.infer<typeof clientMessageSchema>;
export type StartMessage = Extract<ClientMessage, { type: 'start' }>;

export function parseClientMessage(text: string): ClientMessage {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ServiceError('bad_request', 'message is not valid JSON');
  }
  return parseClientObject(json);
}

/** Validates a message already parsed from JSON (a WebRTC stream's start comes from HTTP, not the socket). */
export function parseClientObject(json: unknown): ClientMessage {
  const result = clientMessageSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.join('.') || 'type';
    const message = issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
    throw new ServiceError('bad_request', `${field}: ${message}`, { field });
  }
  return result.data;
}

/** Metadata sent as a text message right before each output frame's binary message. */
export interface FrameMeta {
  readonly type: 'frame';
  readonly output_id: number;
  /** The input frame shown (outputs lag inputs by steps - 1); null for txt2img streams. */
  readonly input_id: number | null;
  /** From the shown input frame's arrival to this send, ms. */
  readonly latency_ms: number;
  /** Pipeline time of the call that produced it, ms. */
  readonly processing_ms: number;
  readonly skipped: boolean;
  readonly width: number;
  readonly height: number;
  readonly format: 'jpeg' | 'webp';
  readonly expert: string;
  /** Denoising steps the frame went through (fewer than asked while the load valve has taken steps away). */
  readonly steps: number;
  readonly adapters: readonly { name: string; weight: number }[];
  /** The VAE that encoded and decoded the frame: the pack's tiny one or the full one. */
  readonly vae: 'full' | 'tiny';
}

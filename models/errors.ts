/**
 * The one error type of the service. Every failure a user can cause or see carries a stable `code` from
 * the list below; the server turns it into an HTTP status or a WebSocket error message in one place.
 * The codes are documented in server/PROTOCOL.md.
 */
export const ERROR_CODES = {
  bad_request: 400, // a parameter is missing, of the wrong type or out of range
  bad_image: 400, // an image could not be decoded, or its format/size is not accepted
  too_large: 413, // a frame, upload or image exceeds a size or pixel limit
  unauthorized: 401, // missing or wrong API key
  forbidden: 403, // a path outside the allowed directories, an origin not allowed
  not_found: 404, // unknown model, adapter, expert, job or stream
  conflict: 409, // the request does not fit the current state (e.g. a job that already finished)
  rate_limited: 429, // too many streams or requests for this client
  model_invalid: 422, // a model pack, adapter, router or manifest file is missing or malformed
  unsupported: 501, // a provider, operator or contract this build cannot run
  unavailable: 503, // the service is shutting down or overloaded
  ffmpeg_missing: 503, // video needs ffmpeg and none was found
  inference_failed: 500, // the runtime failed while running a model
  internal: 500, // a bug: anything not covered above
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ServiceError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** The request field or file the error is about, when there is one. */
  readonly field: string | undefined;
  /** Seconds after which the same request may succeed (a limit or a shutdown): HTTP's Retry-After. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; field?: string; retryAfter?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ServiceError';
    this.code = code;
    this.status = ERROR_CODES[code];
    this.field = options.field;
    this.retryAfter = options.retryAfter === undefined ? undefined : Math.max(1, Math.ceil(options.retryAfter));
  }
}

/** Wraps anything thrown into a ServiceError, keeping ServiceErrors as they are. */
export function toServiceError(error: unknown, fallback: ErrorCode = 'internal'): ServiceError {
  if (error instanceof ServiceError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new ServiceError(fallback, message, { cause: error });
}

/**
 * The one place where errors become HTTP responses: {"error": {"code", "message", "field"}} with the
 * ServiceError's status (and Retry-After when the error says when to retry). Anything else is an internal
 * error (logged with the request id, message not leaked).
 */
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ServiceError } from '../models/errors.ts';
import type { Logger } from './log.ts';

export function errorBody(e: ServiceError): { error: { code: string; message: string; field?: string } } {
  return { error: { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) } };
}

/** Maps body-parser and multer errors (they carry `status`/`type`/`code`) onto our codes. */
function fromLibraryError(err: unknown): ServiceError | undefined {
  const e = err as { status?: number; type?: string; code?: string; message?: string; field?: string };
  if (e.type === 'entity.too.large' || e.code === 'LIMIT_FILE_SIZE') return new ServiceError('too_large', e.message ?? 'request too large', { cause: err });
  if (e.type === 'entity.parse.failed') return new ServiceError('bad_request', `invalid JSON body: ${e.message ?? ''}`, { cause: err });
  if (typeof e.code === 'string' && e.code.startsWith('LIMIT_')) return new ServiceError('bad_request', `${e.message ?? e.code}${e.field ? ` (${e.field})` : ''}`, { cause: err, ...(e.field ? { field: e.field } : {}) });
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new ServiceError('bad_request', e.message ?? 'bad request', { cause: err });
  return undefined;
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const e = err instanceof ServiceError ? err : (fromLibraryError(err) ?? new ServiceError('internal', 'internal error', { cause: err }));
    if (e.status >= 500 && e.code !== 'unavailable') {
      log.error('request failed', { request_id: (req as { id?: unknown }).id, method: req.method, path: req.path, code: e.code, error: String((err as Error)?.stack ?? err) });
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    if (e.retryAfter !== undefined) res.setHeader('Retry-After', String(e.retryAfter));
    res.status(e.status).json(errorBody(e));
  };
}

/** Wraps an async handler so a rejection reaches errorHandler (express 5 does this too; explicit for clarity). */
export function asyncHandler(fn: (...args: Parameters<RequestHandler>) => Promise<unknown>): RequestHandler {
  return (req, res, next) => {
    fn(req, res, next).catch(next);
  };
}

export const notFound: RequestHandler = (req, _res, next) => next(new ServiceError('not_found', `no route ${req.method} ${req.path}`));

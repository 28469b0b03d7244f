/**
 * Per-client request limits (express-rate-limit, keyed by client address; IPv6 by /56 as the library does):
 * - requests: every HTTP request and WebSocket upgrade counts, before the key is checked, so failed logins count;
 * - auth failures: only failed key checks count, against a much smaller limit; a client over it gets 429 for
 *   every request (even with the right key) until its window ends: guessing keys costs a minute per few tries.
 * Over a limit the answer is 429 `rate_limited` with Retry-After (the window's remaining seconds).
 * The stores are the library's MemoryStore (one process); a cluster would pass a shared store (e.g. Redis).
 */
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { ipKeyGenerator, MemoryStore, rateLimit, type Options } from 'express-rate-limit';
import { ServiceError } from '../models/errors.ts';
import type { ServerConfig } from './config.ts';

const WINDOW_MS = 60_000;

export interface RateLimits {
  /** Every request counts (mount before the key check). */
  readonly requests: RequestHandler;
  /** Counts 401 answers; over the limit every request of the client is refused, the right key too (mount before the key check). */
  readonly authFailures: RequestHandler;
  /** A WebSocket upgrade: counts it as a request and throws rate_limited when the client is over either limit. */
  admitUpgrade(req: IncomingMessage): Promise<void>;
  /** A WebSocket upgrade whose key check failed. */
  upgradeFailed(req: IncomingMessage): Promise<void>;
  close(): void;
}

function clientKey(address: string | undefined): string {
  return ipKeyGenerator(address ?? 'unknown');
}

function limited(what: string, retryAfter: number): ServiceError {
  return new ServiceError('rate_limited', `${what}; try again in ${retryAfter} s`, { retryAfter });
}

function secondsLeft(resetTime: Date | undefined): number {
  return Math.max(1, Math.ceil(((resetTime?.getTime() ?? Date.now() + WINDOW_MS) - Date.now()) / 1000));
}

export function createRateLimits(config: Pick<ServerConfig, 'rateLimitPerMinute' | 'authFailuresPerMinute'>): RateLimits {
  const requestStore = new MemoryStore();
  const failureStore = new MemoryStore();
  const common: Partial<Options> = {
    windowMs: WINDOW_MS,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    keyGenerator: (req) => ipKeyGenerator(req.ip ?? req.socket.remoteAddress ?? 'unknown'),
    // trust proxy is off: X-Forwarded-For is ignored on purpose, no need to warn about it
    validate: { xForwardedForHeader: false },
  };
  const perMinute = config.rateLimitPerMinute;
  const requests = rateLimit({
    ...common,
    store: requestStore,
    limit: perMinute,
    skip: () => perMinute <= 0,
    handler: (req, _res, next) => next(limited(`more than ${perMinute} requests per minute from this client`, secondsLeft((req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime))),
  });
  // Failed key checks are counted when the 401 goes out, in the library's store (so they expire with its
  // window); the check itself runs before the key is looked at. (The library's own middleware would count every
  // request until it finishes, and an MJPEG viewer never finishes.)
  const failures = config.authFailuresPerMinute;
  const lockedOut = async (address: string | undefined): Promise<ServiceError | undefined> => {
    const failed = await failureStore.get(clientKey(address));
    if (failed && failed.totalHits >= failures) return limited(`more than ${failures} failed API key checks per minute from this client`, secondsLeft(failed.resetTime));
    return undefined;
  };
  const authFailures: RequestHandler = (req, res, next) => {
    const address = req.ip ?? req.socket.remoteAddress;
    lockedOut(address).then((error) => {
      if (error) return next(error);
      res.once('finish', () => {
        if (res.statusCode === 401) void failureStore.increment(clientKey(address));
      });
      next();
    }, next);
  };
  failureStore.init({ windowMs: WINDOW_MS } as Options); // the store only reads windowMs
  return {
    requests,
    authFailures,
    async admitUpgrade(req) {
      const error = await lockedOut(req.socket.remoteAddress);
      if (error) throw error;
      if (perMinute <= 0) return;
      const hits = await requestStore.increment(clientKey(req.socket.remoteAddress));
      if (hits.totalHits > perMinute) throw limited(`more than ${perMinute} requests per minute from this client`, secondsLeft(hits.resetTime));
    },
    async upgradeFailed(req) {
      await failureStore.increment(clientKey(req.socket.remoteAddress));
    },
    close() {
      requestStore.shutdown();
      failureStore.shutdown();
    },
  };
}

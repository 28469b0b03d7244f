/**
 * Access control. With an API key configured, every HTTP request needs `Authorization: Bearer KEY`, and
 * WebSocket and MJPEG URLs (which browsers and OBS open without headers) may carry `?token=KEY` instead.
 * CORS: only listed origins get CORS headers; a WebSocket from an unlisted foreign origin is refused.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { ServiceError } from '../models/errors.ts';
import type { ServerConfig } from './config.ts';

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The key a request presents: Bearer header, or ?token= on the URL. */
export function presentedKey(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header?.startsWith('Bearer ')) return header.slice(7).trim();
  const url = new URL(req.url ?? '/', 'http://localhost');
  return url.searchParams.get('token') ?? undefined;
}

/** Throws unauthorized when a key is configured and the request does not present it. */
export function checkKey(config: ServerConfig, req: IncomingMessage): void {
  if (!config.apiKey) return;
  const key = presentedKey(req);
  if (!key || !safeEqual(key, config.apiKey)) throw new ServiceError('unauthorized', 'missing or wrong API key (Authorization: Bearer KEY, or ?token=KEY)');
}

/** Same-origin requests and listed origins may call from a browser. */
export function originAllowed(config: ServerConfig, req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true; // not a browser, or same-origin navigation
  const host = req.headers.host;
  try {
    if (host && new URL(origin).host === host) return true;
  } catch {
    return false;
  }
  return config.corsOrigins.includes(origin) || config.corsOrigins.includes('*');
}

/** The UI's static files and health checks need no key; everything else does. */
const PUBLIC_PATHS = [/^\/$/, /^\/(index|render|live|view)\.html$/, /^\/assets\//, /^\/health$/, /^\/favicon\.ico$/];

export function authMiddleware(config: ServerConfig): RequestHandler {
  return (req, _res, next) => {
    if (PUBLIC_PATHS.some((p) => p.test(req.path))) return next();
    try {
      checkKey(config, req);
      next();
    } catch (e) {
      next(e);
    }
  };
}

export function corsMiddleware(config: ServerConfig): RequestHandler {
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && (config.corsOrigins.includes(origin) || config.corsOrigins.includes('*'))) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, X-Stream-Params');
      res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PATCH, DELETE, OPTIONS');
      res.setHeader('Access-Control-Expose-Headers', 'Location, X-Stream-Id'); // WHIP/WHEP resources
    } else if (origin && !originAllowed(config, req)) {
      if (req.method === 'OPTIONS') return next(new ServiceError('forbidden', `origin ${origin} is not allowed`));
    }
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    next();
  };
}

/** A fixed-window request counter per client address. */
export function rateLimit(perMinute: number): RequestHandler {
  const windows = new Map<string, { start: number; count: number }>();
  return (req, _res, next) => {
    if (perMinute <= 0) return next();
    const client = req.socket.remoteAddress ?? 'unknown';
    const now = Date.now();
    const w = windows.get(client);
    if (!w || now - w.start >= 60_000) {
      windows.set(client, { start: now, count: 1 });
      if (windows.size > 10_000) windows.clear(); // bound memory under address churn
      return next();
    }
    if (++w.count > perMinute) return next(new ServiceError('rate_limited', `more than ${perMinute} requests per minute from this client`));
    next();
  };
}

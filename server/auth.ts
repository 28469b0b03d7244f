/**
 * Access control. With an API key configured, every HTTP request needs `Authorization: Bearer KEY`; the URLs
 * browsers and OBS open without headers (WebSocket streams, MJPEG and snapshot images, result files) may carry
 * `?token=KEY` instead, and only those: a key in any other URL is refused, as it would end up in logs and
 * browser history for nothing. CORS headers go to listed origins only (server/request-guards.ts decides which
 * pages may act at all).
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { ServiceError } from '../models/errors.ts';
import type { ServerConfig } from './config.ts';
import { corsListed, originAllowed } from './request-guards.ts';

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** GET URLs a player or an <img> opens without headers: ?token= is accepted on these (and on WebSocket upgrades). */
const TOKEN_URLS = [/^\/v1\/streams\/[^/]+(\/[^/]+)*\/(mjpeg|snapshot)$/, /^\/v1\/jobs\/[^/]+\/results\/[^/]+$/, /^\/v1\/images\/results\/[^/]+$/];

/** Whether this request may present its key as ?token= (WebSocket upgrades always may). */
export function tokenAllowed(req: IncomingMessage): boolean {
  if (req.headers.upgrade?.toLowerCase() === 'websocket') return true;
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  return TOKEN_URLS.some((p) => p.test(path));
}

/** The key a request presents: Bearer header, or ?token= where tokenAllowed says so. */
export function presentedKey(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header?.startsWith('Bearer ')) return header.slice(7).trim();
  if (!tokenAllowed(req)) return undefined;
  return new URL(req.url ?? '/', 'http://localhost').searchParams.get('token') ?? undefined;
}

/** Throws unauthorized when a key is configured and the request does not present it. */
export function checkKey(config: ServerConfig, req: IncomingMessage): void {
  if (!config.apiKey) return;
  const key = presentedKey(req);
  if (!key || !safeEqual(key, config.apiKey)) {
    const hint = tokenAllowed(req) ? 'Authorization: Bearer KEY, or ?token=KEY' : 'Authorization: Bearer KEY; ?token= works only on stream, image and result URLs';
    throw new ServiceError('unauthorized', `missing or wrong API key (${hint})`);
  }
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
    if (origin && corsListed(config, origin)) {
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

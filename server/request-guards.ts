/**
 * Who may talk to the server from a browser, checked before any route (HTTP, WebSocket upgrades, WHIP/WHEP):
 *
 * - Host allow-list (DNS rebinding): a page on evil.example that re-points its name at 127.0.0.1 reaches this
 *   server as a same-origin page, so its requests carry `Host: evil.example`. Only loopback names (localhost,
 *   *.localhost), IP literals (a page at an IP address was served by whoever answers there: no rebinding), the
 *   bound host and `--allowed-hosts` are answered; anything else gets 403 before it reaches a route.
 * - Origin (cross-site requests): browsers put an Origin on every POST/PUT/PATCH/DELETE and WebSocket, including
 *   the "simple" form and multipart posts that need no CORS preflight. A state-changing request or a WebSocket
 *   with an Origin must come from this server's own origin or a `--cors` origin. No Origin means a program
 *   (curl, an SDK, OBS), not a page; a browser's `Sec-Fetch-Site: cross-site` without an Origin is refused too.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { RequestHandler } from 'express';
import { ServiceError } from '../models/errors.ts';
import type { ServerConfig } from './config.ts';

/** Methods that change state: a cross-site page must not be able to send them. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

/** The host name of a Host header value (lower case, no port, no brackets, no trailing dot); undefined if malformed. */
export function hostName(header: string): string | undefined {
  if (header.length === 0 || header.length > 255 || /[\s/?#@\\]/.test(header)) return undefined;
  try {
    const name = new URL(`http://${header}`).hostname.toLowerCase();
    return (name.startsWith('[') ? name.slice(1, -1) : name).replace(/\.$/, '');
  } catch {
    return undefined;
  }
}

/** Whether a Host header names this server (see the module comment). A request without one is not a browser's. */
export function hostAllowed(config: Pick<ServerConfig, 'host' | 'allowedHosts'>, header: string | undefined): boolean {
  if (header === undefined) return true;
  const name = hostName(header);
  if (name === undefined) return false;
  if (name === 'localhost' || name.endsWith('.localhost') || isIP(name) !== 0) return true;
  const bound = hostName(config.host);
  if (bound !== undefined && !WILDCARD_HOSTS.has(config.host) && name === bound) return true;
  return config.allowedHosts.some((allowed) => allowed === '*' || allowed === name || (allowed.startsWith('.') && (name === allowed.slice(1) || name.endsWith(allowed))));
}

/** Whether `origin` is one of the configured CORS origins. */
export function corsListed(config: Pick<ServerConfig, 'corsOrigins'>, origin: string): boolean {
  return config.corsOrigins.includes('*') || config.corsOrigins.includes(origin);
}

/**
 * Whether a browser request may act: no Origin (a program), this server's own origin (the Origin's host is the
 * Host header, which hostAllowed has vetted), or a listed CORS origin. "null" origins (sandboxed frames,
 * file: pages) are foreign.
 */
export function originAllowed(config: Pick<ServerConfig, 'corsOrigins'>, req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) {
    const site = req.headers['sec-fetch-site'];
    return site !== 'cross-site' && site !== 'same-site';
  }
  if (corsListed(config, origin)) return true;
  try {
    const url = new URL(origin);
    const host = req.headers.host;
    return (url.protocol === 'http:' || url.protocol === 'https:') && host !== undefined && url.host === new URL(`${url.protocol}//${host}`).host;
  } catch {
    return false;
  }
}

/** The Host and Origin checks of one request; throws forbidden. `stateChanging`: WebSockets always are. */
export function checkRequest(config: ServerConfig, req: IncomingMessage, stateChanging: boolean): void {
  const host = req.headers.host;
  if (!hostAllowed(config, host)) {
    throw new ServiceError('forbidden', `host ${JSON.stringify(host?.slice(0, 100))} is not served here: add it with --allowed-hosts`, { field: 'host' });
  }
  if (stateChanging && !originAllowed(config, req)) {
    const origin = req.headers.origin;
    throw new ServiceError('forbidden', `origin ${origin === undefined ? '(cross-site)' : JSON.stringify(origin.slice(0, 200))} may not change anything here: same-origin pages and --cors origins only`, { field: 'origin' });
  }
}

/** Express middleware: the Host check on every request, the Origin check on state-changing ones. */
export function requestGuards(config: ServerConfig): RequestHandler {
  return (req, _res, next) => {
    try {
      checkRequest(config, req, !SAFE_METHODS.has(req.method));
      next();
    } catch (error) {
      next(error);
    }
  };
}

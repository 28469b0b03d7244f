/**
 * Security headers on every response (helmet), with a Content-Security-Policy the UI pages work under: scripts
 * only from this server (the pages are ES modules, no inline script), images and media also from blob:/data:
 * URLs the pages make (results, the img2img preview), fetch/WebSocket only to this server (and data: URLs the
 * render page reads back). No HSTS and no upgrade-insecure-requests: the service speaks plain HTTP on loopback
 * or a LAN (a TLS proxy in front sets its own HSTS), and upgrading a LAN page's requests to https would break it.
 * Referrer-Policy no-referrer keeps ?token= URLs out of Referer headers.
 */
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import helmet from 'helmet';

/** A Host header safe to echo into the policy (it has passed the Host allow-list; this keeps ';' out). */
const PLAIN_HOST = /^[A-Za-z0-9.:[\]-]{1,255}$/;

/** ws:// and wss:// to this host ('self' covers them in CSP 3 browsers; older ones need them spelled out). */
function sameHostSockets(req: IncomingMessage): string {
  const host = req.headers.host;
  return host && PLAIN_HOST.test(host) ? `ws://${host} wss://${host}` : "'self'";
}

export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'self'"],
        'base-uri': ["'self'"],
        'script-src': ["'self'"],
        'script-src-attr': ["'none'"],
        // inline <style> blocks are harmless here (no user content is ever put into a page's HTML)
        'style-src': ["'self'", "'unsafe-inline'"],
        'img-src': ["'self'", 'data:', 'blob:'],
        'media-src': ["'self'", 'blob:'],
        'font-src': ["'self'", 'data:'],
        'connect-src': ["'self'", 'data:', (req) => sameHostSockets(req)],
        'object-src': ["'none'"],
        'frame-ancestors': ["'self'"],
        'form-action': ["'self'"],
      },
    },
    strictTransportSecurity: false,
    referrerPolicy: { policy: 'no-referrer' },
  }) as RequestHandler;
}

/**
 * Structured logs (pino): one JSON object per line, on stdout (errors on stderr), quiet under tests unless
 * LOG_LEVEL is set. Secrets never reach a line: Authorization and Cookie headers, API keys and tokens in any
 * field are censored by pino's redaction, and URLs are logged through redactUrl (no ?token= value, no
 * user:password@). HTTP requests are logged by pino-http (requestLogger) with a request id, which the response
 * carries as X-Request-Id.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import { pino, type DestinationStream, type Logger as Pino } from 'pino';
import { pinoHttp } from 'pino-http';

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  /** The pino logger underneath (pino-http logs through it). */
  readonly pino: Pino;
}

const CENSORED = '[redacted]';
/** Field paths censored wherever they appear in a line. */
const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'apiKey',
  'api_key',
  'token',
  'password',
  '*.apiKey',
  '*.api_key',
  '*.token',
  '*.password',
];

/** A URL (absolute, or a path with a query) without secrets: the token query value and user:password@ are censored. */
export function redactUrl(url: string): string {
  return url
    .replace(/([?&](?:token|api_key|apikey|key|access_token)=)[^&#\s]*/gi, `$1${CENSORED}`)
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i, `$1${CENSORED}@`);
}

/** Censors user:password@ in every URL inside a text (error messages quote URLs). */
export function redactText(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi, `$1${CENSORED}@`).replace(/([?&]token=)[^&#\s]*/gi, `$1${CENSORED}`);
}

function defaultLevel(): Level {
  const env = process.env['LOG_LEVEL'];
  if (env === 'debug' || env === 'info' || env === 'warn' || env === 'error') return env;
  return process.env['NODE_TEST_CONTEXT'] ? 'error' : 'info';
}

function wrap(p: Pino): Logger {
  return {
    debug: (m, f) => p.debug(f ?? {}, m),
    info: (m, f) => p.info(f ?? {}, m),
    warn: (m, f) => p.warn(f ?? {}, m),
    error: (m, f) => p.error(f ?? {}, m),
    child: (fields) => wrap(p.child(fields)),
    pino: p,
  };
}

/** A logger; `destination` (tests) takes every line instead of stdout/stderr. */
export function createLogger(base: Record<string, unknown> = {}, level: Level = defaultLevel(), destination?: DestinationStream): Logger {
  const streams = destination ?? pino.multistream(
    [
      { level: 'debug', stream: pino.destination({ dest: 1, sync: true }) },
      { level: 'error', stream: pino.destination({ dest: 2, sync: true }) },
    ],
    { dedupe: true }, // a line goes to the most severe stream that takes it: errors to stderr only
  );
  const p = pino(
    {
      level,
      base,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT, censor: CENSORED },
    },
    streams,
  );
  return wrap(p);
}

/** A request id: the client's X-Request-Id when it is a plain token, else a new UUID. */
function requestId(req: IncomingMessage, res: ServerResponse): string {
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && /^[\w.-]{1,64}$/.test(given) ? given : randomUUID();
  res.setHeader('X-Request-Id', id);
  return id;
}

/** pino-http: one line per finished request (method, redacted URL, status, time, request id); /health is not logged. */
export function requestLogger(log: Logger): RequestHandler {
  return pinoHttp({
    logger: log.pino,
    genReqId: requestId,
    autoLogging: { ignore: (req) => req.url === '/health' },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
    serializers: {
      req: (req: { id: unknown; method: string; url: string; remoteAddress?: string }) => ({ id: req.id, method: req.method, url: redactUrl(req.url), remote: req.remoteAddress }),
      res: (res: { statusCode: number }) => ({ status: res.statusCode }),
    },
  }) as unknown as RequestHandler;
}

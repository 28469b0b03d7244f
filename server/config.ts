/**
 * Server configuration from flags and environment (flags win). Defaults are safe: loopback only, and an API
 * key is required before the server will bind to any other address.
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { ServiceError } from '../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../models/pack.ts';
import { parseProvider, type Provider } from '../models/runtime/onnx.ts';

export interface ServerConfig {
  readonly host: string;
  /** 0 picks a free port (tests). */
  readonly port: number;
  readonly modelDir: string;
  readonly provider: Provider;
  /** Intra-op threads per ONNX session; 0 = onnxruntime's default. */
  readonly threads: number;
  /** Use the pack's tiny VAE (TAESD) instead of the full one when it has one: faster, slightly softer. */
  readonly tinyVae: boolean;
  /** Required on HTTP (Bearer) and on WebSocket/MJPEG URLs (?token=) when set; mandatory off loopback. */
  readonly apiKey: string | undefined;
  /** Origins allowed by CORS; empty = same-origin only. */
  readonly corsOrigins: readonly string[];
  /** Jobs, uploads and results live here. */
  readonly dataDir: string;
  /** Server-side video paths must lie under one of these. */
  readonly videoDirs: readonly string[];
  /** Concurrent streams in all, and per client address. */
  readonly maxStreams: number;
  readonly maxStreamsPerClient: number;
  /** Largest accepted frame (WebSocket binary message), bytes. */
  readonly maxFrameBytes: number;
  /** Largest accepted upload (images, videos, adapters), bytes. */
  readonly maxUploadBytes: number;
  /** HTTP requests per client per minute (0 = unlimited). */
  readonly rateLimitPerMinute: number;
  /** Rows per UNet call across streams; 1 disables cross-stream batching. */
  readonly maxBatchRows: number;
}

export const DEFAULT_CONFIG: ServerConfig = Object.freeze({
  host: '127.0.0.1',
  port: 7860, // the port AUTOMATIC1111 and the StreamDiffusion demos use
  modelDir: EMBEDDED_PACK_DIR,
  provider: 'cpu',
  threads: 0,
  tinyVae: false,
  apiKey: undefined,
  corsOrigins: [],
  dataDir: resolve('data'),
  videoDirs: [],
  maxStreams: 16,
  maxStreamsPerClient: 8,
  maxFrameBytes: 4 * 1024 * 1024, // a 1080p JPEG is well under 1 MB
  maxUploadBytes: 200 * 1024 * 1024, // a few minutes of 720p H.264
  rateLimitPerMinute: 600,
  maxBatchRows: 16,
});

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

function int(value: string, name: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new ServiceError('bad_request', `--${name} must be an integer in ${min}..${max}, got "${value}"`, { field: name });
  return n;
}

/** Reads flags (argv) over environment (env) over defaults, and checks that the result is safe. */
export function loadConfig(argv: readonly string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      model: { type: 'string' },
      provider: { type: 'string' },
      threads: { type: 'string' },
      'tiny-vae': { type: 'boolean' },
      'api-key': { type: 'string' },
      cors: { type: 'string' },
      'data-dir': { type: 'string' },
      'video-dir': { type: 'string', multiple: true },
      'max-streams': { type: 'string' },
      'max-batch-rows': { type: 'string' },
    },
  });
  const pick = (flag: string | undefined, name: string): string | undefined => flag ?? env[name];
  const d = DEFAULT_CONFIG;
  const port = pick(values.port, 'PORT');
  const threads = pick(values.threads, 'THREADS');
  const maxStreams = pick(values['max-streams'], 'MAX_STREAMS');
  const maxBatchRows = pick(values['max-batch-rows'], 'MAX_BATCH_ROWS');
  const cors = pick(values.cors, 'CORS_ORIGINS');
  const videoDirs = values['video-dir'] ?? env['VIDEO_DIRS']?.split(':').filter(Boolean) ?? [];
  const config: ServerConfig = {
    ...d,
    host: pick(values.host, 'HOST') ?? d.host,
    port: port === undefined ? d.port : int(port, 'port', 0, 65535),
    modelDir: resolve(pick(values.model, 'MODEL_DIR') ?? d.modelDir),
    provider: parseProvider(pick(values.provider, 'PROVIDER') ?? d.provider),
    threads: threads === undefined ? d.threads : int(threads, 'threads', 0, 256),
    tinyVae: values['tiny-vae'] ?? env['TINY_VAE'] === '1',
    apiKey: pick(values['api-key'], 'API_KEY') || undefined,
    corsOrigins: cors ? cors.split(',').map((s) => s.trim()).filter(Boolean) : d.corsOrigins,
    dataDir: resolve(pick(values['data-dir'], 'DATA_DIR') ?? d.dataDir),
    videoDirs: videoDirs.map((p) => resolve(p)),
    maxStreams: maxStreams === undefined ? d.maxStreams : int(maxStreams, 'max-streams', 1, 1024),
    maxBatchRows: maxBatchRows === undefined ? d.maxBatchRows : int(maxBatchRows, 'max-batch-rows', 1, 256),
  };
  if (!isLoopback(config.host) && !config.apiKey) {
    throw new ServiceError('forbidden', `refusing to bind ${config.host} without an API key: set --api-key or API_KEY (or bind 127.0.0.1)`);
  }
  return config;
}

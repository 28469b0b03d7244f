/**
 * Server configuration from flags and environment (flags win). Defaults are safe: loopback only, and an API
 * key is required before the server will bind to any other address.
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { ServiceError } from '../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../models/pack.ts';
import { parseProvider, type Provider } from '../models/runtime/contract.ts';
import { DEFAULT_MIN_SHARE } from '../models/runtime/urgency.ts';
import { parseIceServers, type IceServer } from './webrtc/ice.ts';

export interface ServerConfig {
  readonly host: string;
  /** 0 picks a free port (tests). */
  readonly port: number;
  readonly modelDir: string;
  readonly provider: Provider;
  /** Intra-op threads per ONNX session; 0 = chosen per stage from the cores and workers (1 each on 2 cores). */
  readonly threads: number;
  /** Worker threads that run the models; undefined = one per core (at most 8). */
  readonly workers: number | undefined;
  /**
   * Which requests use the pack's tiny VAE (taesd_*: a few times cheaper, slightly softer) when they do not choose
   * with `vae`: `live` streams (default), `all` requests, or `off`. Packs without one always use the full VAE.
   */
  readonly tinyVae: TinyVaeUse;
  /** Required on HTTP (Bearer) and on WebSocket/MJPEG URLs (?token=) when set; mandatory off loopback. */
  readonly apiKey: string | undefined;
  /** Origins allowed by CORS and to make state-changing requests; empty = same-origin only. */
  readonly corsOrigins: readonly string[];
  /**
   * Host names the server answers to (the Host header) besides loopback names and IP addresses: the defence
   * against DNS rebinding. `.example.com` allows example.com and its subdomains; `*` allows any host.
   */
  readonly allowedHosts: readonly string[];
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
  /** HTTP requests per client per minute (0 = unlimited); failed key checks count too. */
  readonly rateLimitPerMinute: number;
  /** Failed API-key checks (HTTP and WebSocket) per client per minute before the client gets 429 for a while. */
  readonly authFailuresPerMinute: number;
  /** WebSockets connected but not started yet, in all and per client address (a start is due within startTimeoutMs). */
  readonly maxPendingSockets: number;
  readonly maxPendingSocketsPerClient: number;
  readonly startTimeoutMs: number;
  /**
   * Latent pixels all open streams may use together: each stream costs (width / f) x (height / f), f the pack's
   * VAE factor (8 for SD: a 512x512 stream costs 4096). Memory and compute grow with it.
   */
  readonly maxLatentArea: number;
  /** Merged adapter variants alive at once; each is a UNet session on its own worker thread. */
  readonly maxVariants: number;
  /** Jobs queued or running, in all and per client address; more get 429 with Retry-After. */
  readonly maxQueuedJobs: number;
  readonly maxQueuedJobsPerClient: number;
  /** At shutdown, in-flight HTTP requests get this long to finish before they are answered 503, ms. */
  readonly shutdownGraceMs: number;
  /** Most rows per UNet call across streams (calls grow only while the measured cost per row falls); 1 disables cross-stream batching. */
  readonly maxBatchRows: number;
  /** Cluster mode (server/cluster/): the Redis every node shares. Unset: one process, no Redis. */
  readonly redisUrl: string | undefined;
  /** What a cluster node does: `api` (gateway: HTTP, relays streams, queues renders), `worker`, or `all`. */
  readonly role: NodeRole;
  /** The address other nodes reach this one at (gateways relay streams to it); default http://host:port. */
  readonly advertiseUrl: string | undefined;
  /** A worker that has not renewed its job lock for this long is taken for dead: its job runs elsewhere, ms. */
  readonly jobLockMs: number;
  /** A worker takes no new jobs while the machine has less free memory than this, MiB. */
  readonly minFreeMemoryMb: number;
  /**
   * Minimum share of worker time owed to interactive renders and to background jobs each while live streams keep
   * the workers busy (models/runtime/urgency.ts); 0 lets live frames take everything.
   */
  readonly backgroundShare: number;
  /** STUN/TURN servers for WebRTC peers; none = host candidates only (loopback/LAN). */
  readonly iceServers: readonly IceServer[];
}

export const NODE_ROLES = ['all', 'api', 'worker'] as const;
export type NodeRole = (typeof NODE_ROLES)[number];

export const TINY_VAE_USES = ['live', 'all', 'off'] as const;
export type TinyVaeUse = (typeof TINY_VAE_USES)[number];

export const DEFAULT_CONFIG: ServerConfig = Object.freeze({
  host: '127.0.0.1',
  port: 7860, // the port AUTOMATIC1111 and the StreamDiffusion demos use
  modelDir: EMBEDDED_PACK_DIR,
  provider: 'cpu',
  threads: 0,
  workers: undefined,
  tinyVae: 'live',
  apiKey: undefined,
  corsOrigins: [],
  allowedHosts: [],
  dataDir: resolve('data'),
  videoDirs: [],
  maxStreams: 16,
  maxStreamsPerClient: 8,
  maxFrameBytes: 4 * 1024 * 1024, // a 1080p JPEG is well under 1 MB
  maxUploadBytes: 200 * 1024 * 1024, // a few minutes of 720p H.264
  rateLimitPerMinute: 600,
  authFailuresPerMinute: 10, // a person mistyping a key needs a few tries; guessing one needs billions
  maxPendingSockets: 32,
  maxPendingSocketsPerClient: 8, // a page opens one socket per stream and starts it at once
  startTimeoutMs: 10_000,
  maxLatentArea: 2 * 128 * 128, // two 1024x1024 SD streams, eight at 512x512, 128 of tiny-shapes' 128x128
  maxVariants: 4, // a merged SD 1.5 UNet holds 3.4 GB of weights (fp32)
  maxQueuedJobs: 64,
  maxQueuedJobsPerClient: 16,
  shutdownGraceMs: 10_000, // what process managers wait by default before SIGKILL (Docker 10 s, systemd 90 s)
  maxBatchRows: 16,
  redisUrl: undefined,
  role: 'all',
  advertiseUrl: undefined,
  // longer than the longest model call: a call blocks the event loop, and with it the lock's renewal
  jobLockMs: 30_000,
  minFreeMemoryMb: 256,
  backgroundShare: DEFAULT_MIN_SHARE,
  iceServers: [], // host candidates reach loopback and LAN peers; NAT needs a STUN/TURN server given explicitly
});

/** An API key must be at least this long (and have no whitespace) when the server listens beyond loopback. */
export const MIN_REMOTE_KEY_LENGTH = 16;

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

function int(value: string, name: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new ServiceError('bad_request', `--${name} must be an integer in ${min}..${max}, got "${value}"`, { field: name });
  return n;
}

type ClusterFields = Pick<ServerConfig, 'redisUrl' | 'role' | 'advertiseUrl' | 'jobLockMs' | 'minFreeMemoryMb'>;

/** The cluster's flags: a role or an advertised address without --redis is a mistake, not a silent no-op. */
function clusterConfig(values: Record<string, string | boolean | string[] | undefined>, env: NodeJS.ProcessEnv): ClusterFields {
  const flag = (name: string, variable: string): string | undefined => {
    const v = values[name];
    return typeof v === 'string' ? v : env[variable] || undefined;
  };
  const d = DEFAULT_CONFIG;
  const redisUrl = flag('redis', 'REDIS_URL');
  const role = flag('role', 'ROLE');
  const advertiseUrl = flag('advertise-url', 'ADVERTISE_URL');
  const lock = flag('job-lock-ms', 'JOB_LOCK_MS');
  const free = flag('min-free-mb', 'MIN_FREE_MB');
  if (role !== undefined && !(NODE_ROLES as readonly string[]).includes(role)) throw new ServiceError('bad_request', `--role must be one of ${NODE_ROLES.join(', ')}, got "${role}"`, { field: 'role' });
  if (redisUrl === undefined && (role !== undefined || advertiseUrl !== undefined)) {
    throw new ServiceError('bad_request', `--${role !== undefined ? 'role' : 'advertise-url'} needs --redis URL (or REDIS_URL): roles exist only in a cluster`, { field: 'redis' });
  }
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) throw new ServiceError('bad_request', `--redis must be a redis:// or rediss:// URL, got "${redisUrl}"`, { field: 'redis' });
  if (advertiseUrl !== undefined && !/^https?:\/\/[^/]+$/.test(advertiseUrl)) throw new ServiceError('bad_request', `--advertise-url must be http(s)://host:port, got "${advertiseUrl}"`, { field: 'advertise-url' });
  return {
    redisUrl,
    role: (role as NodeRole | undefined) ?? d.role,
    advertiseUrl,
    jobLockMs: lock === undefined ? d.jobLockMs : int(lock, 'job-lock-ms', 1000, 3_600_000),
    minFreeMemoryMb: free === undefined ? d.minFreeMemoryMb : int(free, 'min-free-mb', 0, 1 << 20),
  };
}

function fraction(value: string, name: string, min: number, max: number): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new ServiceError('bad_request', `--${name} must be a number in ${min}..${max}, got "${value}"`, { field: name });
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
      workers: { type: 'string' },
      'tiny-vae': { type: 'string' },
      'api-key': { type: 'string' },
      cors: { type: 'string' },
      'allowed-hosts': { type: 'string' },
      'data-dir': { type: 'string' },
      'video-dir': { type: 'string', multiple: true },
      'max-streams': { type: 'string' },
      'max-batch-rows': { type: 'string' },
      'max-variants': { type: 'string' },
      'max-latent-area': { type: 'string' },
      'max-queued-jobs': { type: 'string' },
      'shutdown-grace': { type: 'string' },
      redis: { type: 'string' },
      role: { type: 'string' },
      'advertise-url': { type: 'string' },
      'job-lock-ms': { type: 'string' },
      'min-free-mb': { type: 'string' },
      'background-share': { type: 'string' },
      'ice-servers': { type: 'string' },
      'ice-username': { type: 'string' },
      'ice-credential': { type: 'string' },
    },
  });
  const pick = (flag: string | undefined, name: string): string | undefined => flag ?? env[name];
  const d = DEFAULT_CONFIG;
  const port = pick(values.port, 'PORT');
  const threads = pick(values.threads, 'THREADS');
  const workers = pick(values.workers, 'WORKERS');
  const tinyVae = pick(values['tiny-vae'], 'TINY_VAE') ?? d.tinyVae;
  if (!(TINY_VAE_USES as readonly string[]).includes(tinyVae)) {
    throw new ServiceError('bad_request', `--tiny-vae must be one of ${TINY_VAE_USES.join(', ')}, got "${tinyVae}"`, { field: 'tiny-vae' });
  }
  const maxStreams = pick(values['max-streams'], 'MAX_STREAMS');
  const maxBatchRows = pick(values['max-batch-rows'], 'MAX_BATCH_ROWS');
  const share = pick(values['background-share'], 'BACKGROUND_SHARE');
  const cors = pick(values.cors, 'CORS_ORIGINS');
  const hosts = pick(values['allowed-hosts'], 'ALLOWED_HOSTS');
  const maxVariants = pick(values['max-variants'], 'MAX_VARIANTS');
  const maxArea = pick(values['max-latent-area'], 'MAX_LATENT_AREA');
  const maxQueuedJobs = pick(values['max-queued-jobs'], 'MAX_QUEUED_JOBS');
  const grace = pick(values['shutdown-grace'], 'SHUTDOWN_GRACE');
  const list = (text: string) => text.split(',').map((s) => s.trim()).filter(Boolean);
  const videoDirs = values['video-dir'] ?? env['VIDEO_DIRS']?.split(':').filter(Boolean) ?? [];
  const config: ServerConfig = {
    ...d,
    host: pick(values.host, 'HOST') ?? d.host,
    port: port === undefined ? d.port : int(port, 'port', 0, 65535),
    modelDir: resolve(pick(values.model, 'MODEL_DIR') ?? d.modelDir),
    provider: parseProvider(pick(values.provider, 'PROVIDER') ?? d.provider),
    threads: threads === undefined ? d.threads : int(threads, 'threads', 0, 256),
    workers: workers === undefined ? d.workers : int(workers, 'workers', 0, 64),
    tinyVae: tinyVae as TinyVaeUse,
    apiKey: pick(values['api-key'], 'API_KEY') || undefined,
    corsOrigins: cors ? list(cors) : d.corsOrigins,
    allowedHosts: hosts ? list(hosts).map((h) => h.toLowerCase()) : d.allowedHosts,
    dataDir: resolve(pick(values['data-dir'], 'DATA_DIR') ?? d.dataDir),
    videoDirs: videoDirs.map((p) => resolve(p)),
    maxStreams: maxStreams === undefined ? d.maxStreams : int(maxStreams, 'max-streams', 1, 1024),
    maxBatchRows: maxBatchRows === undefined ? d.maxBatchRows : int(maxBatchRows, 'max-batch-rows', 1, 256),
    maxVariants: maxVariants === undefined ? d.maxVariants : int(maxVariants, 'max-variants', 1, 64),
    maxLatentArea: maxArea === undefined ? d.maxLatentArea : int(maxArea, 'max-latent-area', 64, 2 ** 24),
    maxQueuedJobs: maxQueuedJobs === undefined ? d.maxQueuedJobs : int(maxQueuedJobs, 'max-queued-jobs', 1, 100_000),
    shutdownGraceMs: grace === undefined ? d.shutdownGraceMs : 1000 * int(grace, 'shutdown-grace', 0, 3600),
    ...clusterConfig(values, env),
    backgroundShare: share === undefined ? d.backgroundShare : fraction(share, 'background-share', 0, 0.5),
    iceServers: parseIceServers(pick(values['ice-servers'], 'ICE_SERVERS'), pick(values['ice-username'], 'ICE_USERNAME'), pick(values['ice-credential'], 'ICE_CREDENTIAL')),
  };
  checkKeyStrength(config);
  return config;
}

/** No key off loopback, and no guessable key: at least MIN_REMOTE_KEY_LENGTH characters, no whitespace. */
export function checkKeyStrength(config: Pick<ServerConfig, 'host' | 'apiKey'>): void {
  const key = config.apiKey;
  if (key !== undefined && /\s/.test(key)) throw new ServiceError('bad_request', 'the API key must not contain whitespace', { field: 'api-key' });
  if (isLoopback(config.host)) return;
  if (!key) throw new ServiceError('forbidden', `refusing to bind ${config.host} without an API key: set --api-key or API_KEY (or bind 127.0.0.1)`, { field: 'api-key' });
  if (key.length < MIN_REMOTE_KEY_LENGTH) {
    throw new ServiceError('forbidden', `refusing to bind ${config.host} with an API key of ${key.length} characters: use at least ${MIN_REMOTE_KEY_LENGTH} (e.g. openssl rand -hex 24)`, { field: 'api-key' });
  }
}

/**
 * Where each network of a pack runs, and with how many threads. A network's role picks the workers of the pool
 * it is loaded on, so that the stages of a frame run on different cores at once (REFERENCE §9: a two-worker
 * split reached 96-107 fps where one thread gave 52): with two workers the UNet and the VAE decoder share one,
 * the text encoder and the VAE encoder the other, so a stream's next frame is encoded while its current one is
 * denoised. The UNet and the decoder stay together (a model run right after another one runs ~2 ms slower for
 * the cache; the UNet runs every frame). More workers repeat the two groups (replicas: calls go to the least busy).
 */
import { availableParallelism } from 'node:os';
import { ServiceError } from './errors.ts';
import { DEFAULT_SESSION_OPTIONS, type Model, type Provider, type SessionOptions } from './runtime/contract.ts';
import type { Dispatcher } from './runtime/dispatcher.ts';
import { sharedPool, WorkerPool, type WorkerModel } from './runtime/worker-pool.ts';

export type Role = 'text_encoder' | 'vae_encoder' | 'unet' | 'vae_decoder';

/** Which group of workers a role's sessions go to (see the module comment). */
const GROUP: Record<Role, 0 | 1> = { unet: 0, vae_decoder: 0, text_encoder: 1, vae_encoder: 1 };

export interface Placement {
  /** Indices of the pool's workers that hold a session of the model. */
  readonly workers: readonly number[];
  /** Intra-op threads of each of those sessions. */
  readonly threads: number;
}

/**
 * A role's workers and threads in a pool of `poolSize` workers on `cores` cores. `threads` > 0 fixes the
 * threads of every session; 0 splits the cores between the workers (1 each on 2 cores: a second thread per
 * session only competes with the other stage for the same two cores).
 */
export function placement(role: Role, poolSize: number, cores: number, threads: number): Placement {
  const perSession = threads > 0 ? threads : Math.max(1, Math.floor(cores / Math.max(1, poolSize)));
  if (poolSize <= 1) return { workers: [0], threads: perSession };
  const workers = Array.from({ length: poolSize }, (_, i) => i).filter((i) => i % 2 === GROUP[role]);
  return { workers, threads: perSession };
}

export interface SessionsOptions {
  readonly provider: Provider;
  /** Intra-op threads per session; 0 = chosen per role from the cores (placement()). */
  readonly threads: number;
  /**
   * Worker threads that hold the sessions: undefined = the process's shared pool (one per core), 0 = none
   * (sessions run on the calling thread and block it: tools, comparisons), n = a pool of n for these sessions.
   */
  readonly workers?: number | undefined;
}

/** A session on the calling thread; onnxruntime is loaded here only then (the service's main thread never loads it). */
async function onThisThread(source: string | Uint8Array, options: SessionOptions): Promise<Model> {
  const { OnnxModel } = await import('./runtime/onnx.ts');
  return OnnxModel.load(source, options);
}

/** Opens a pack's sessions where their role says; owns its pool when it was given a worker count. */
export class ModelSessions {
  private readonly pool: WorkerPool | undefined;
  private readonly ownsPool: boolean;
  private readonly opened = new Set<Model>();

  constructor(readonly options: SessionsOptions) {
    const { workers } = options;
    if (workers !== undefined && (!Number.isInteger(workers) || workers < 0)) throw new ServiceError('bad_request', `workers must be a whole number >= 0, got ${workers}`, { field: 'workers' });
    this.ownsPool = workers !== undefined && workers > 0;
    this.pool = workers === undefined ? sharedPool() : workers > 0 ? new WorkerPool(workers) : undefined;
  }

  /** Worker threads holding sessions (0: they run on the calling thread). */
  get workerCount(): number {
    return this.pool?.size ?? 0;
  }

  /** The queue these sessions' calls wait in (undefined: sessions run on the calling thread). */
  get dispatcher(): Dispatcher | undefined {
    return this.pool?.dispatcher;
  }

  /** Calls waiting for a worker (the dispatcher's queue). */
  get waiting(): number {
    return this.pool?.dispatcher.waiting ?? 0;
  }

  /**
   * A network of the pack, on the workers its role is placed on. `externalDataDir`: where the external data of a
   * model given as bytes lies (a model read from a path finds its own).
   */
  async open(source: string | Uint8Array, role: Role, label: string, externalDataDir?: string): Promise<Model> {
    const where = placement(role, this.workerCount, availableParallelism(), this.options.threads);
    const options = this.sessionOptions(label, where.threads, externalDataDir);
    return this.track(this.pool ? await this.pool.load(source, options, where.workers) : await onThisThread(source, options));
  }

  /**
   * A model on a worker of its own (a merged-adapter UNet: building a session blocks its thread for hundreds of
   * ms, which must not stall the streams on the pool), or beside such a model on its worker (its text encoder).
   */
  async openOwn(source: string | Uint8Array, label: string, beside?: Model, externalDataDir?: string): Promise<Model> {
    const threads = this.options.threads > 0 ? this.options.threads : 1;
    const options = this.sessionOptions(label, threads, externalDataDir);
    if (!this.pool) return this.track(await onThisThread(source, options));
    const home = beside && (beside as Partial<WorkerModel>).workers?.[0];
    return this.track(await this.pool.load(source, options, home ?? 'own'));
  }

  /** Starts a worker for the next openOwn() now (starting one compiles the runtime: better before a swap than during). */
  prewarm(): void {
    this.pool?.prewarm();
  }

  /** Releases one model opened here before the rest (an evicted merged UNet). */
  async release(model: Model): Promise<void> {
    if (this.opened.delete(model)) await model.release();
  }

  /** Releases every session opened here, and ends the pool if it is this object's own. */
  async close(): Promise<void> {
    const models = [...this.opened];
    this.opened.clear();
    await Promise.allSettled(models.map((m) => m.release()));
    if (this.ownsPool) await this.pool?.close();
  }

  private sessionOptions(label: string, threads: number, externalDataDir: string | undefined): SessionOptions {
    return { ...DEFAULT_SESSION_OPTIONS, provider: this.options.provider, threads, label, externalDataDir };
  }

  private track(model: Model): Model {
    this.opened.add(model);
    return model;
  }
}

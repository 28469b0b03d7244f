/**
 * Worker threads that hold the service's ONNX sessions (session-worker.ts), so no model ever runs on the main
 * thread: the event loop keeps serving sockets and health checks while models run, and models on different
 * workers run at the same time on different cores. A pool has a fixed set of workers (sized to the cores) that
 * sessions are placed on by index, plus dedicated workers started for one model each (a merged-adapter UNet is
 * built on its own thread, so building it stalls nobody). Calls go through the pool's Dispatcher.
 *
 * Workers are unreferenced while idle, so a process whose work is done exits; a process that calls
 * process.exit() must close() its pools first (onnxruntime aborts the process when live sessions are torn down).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.ts';
import { ModelContract, type Feed, type IoSpec, type Model, type Outputs, type Rgb8Tensor, type SessionOptions } from './contract.ts';
import { Dispatcher, type CallTarget, type Replica } from './dispatcher.ts';
import type { WireFeed, WorkerReply, WorkerRequest } from './session-worker.ts';

const WORKER_URL = new URL('./session-worker.ts', import.meta.url);
/**
 * The worker is TypeScript like the rest of the service: a small script registers tsx's loader in the worker,
 * then imports it (Node 20 does not carry a parent's --import loader into a worker's entry).
 */
const WORKER_BOOTSTRAP = `(async () => { (await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})).register(); await import(${JSON.stringify(WORKER_URL.href)}); })()`;

/**
 * How much nicer worker threads (and the intra-op threads they start) are than the main thread: a little, so
 * that when every core is busy with models, the main thread's I/O (frames in and out, /health) runs first.
 * The main thread is idle most of the time; the workers still get every cycle it leaves.
 */
export const WORKER_NICE = 5;

/** Kept feeds (prompt contexts) a worker holds at most; the least recently used is dropped first. */
const KEPT_FEEDS = 64;

/** Workers in the shared pool: one per core (2 on the 2-core machine the targets are set for), at most 8. */
export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

type Pending = { resolve: (reply: WorkerReply) => void; reject: (error: Error) => void };

/** One worker thread and the requests on their way to it. */
export class SessionWorker implements CallTarget {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  /** Keys of the feeds the worker keeps, least recently used first (this side decides what it drops). */
  private readonly kept = new Map<string, true>();
  private evicted: string[] = [];
  private nextId = 1;
  private stopped: ServiceError | undefined;
  private runs = 0;
  /** Sessions loaded here and not released. */
  sessions = 0;

  constructor(
    readonly name: string,
    /** A dedicated worker ends when its last session is released. */
    readonly dedicated: boolean,
  ) {
    this.worker = new Worker(WORKER_BOOTSTRAP, { eval: true, name, workerData: { nice: WORKER_NICE } });
    this.worker.on('message', (msg: WorkerReply) => {
      if (msg.type === 'started') return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (this.pending.size === 0) this.worker.unref(); // idle: does not hold the process open
      if (msg.type === 'error') p?.reject(new ServiceError(msg.code ?? 'inference_failed', msg.message));
      else p?.resolve(msg);
    });
    const stop = (error: ServiceError) => {
      this.stopped ??= error;
      for (const p of this.pending.values()) p.reject(this.stopped);
      this.pending.clear();
    };
    this.worker.on('error', (e) => stop(new ServiceError('inference_failed', `worker ${name} failed: ${e.message}`, { cause: e })));
    this.worker.on('exit', () => stop(new ServiceError('unavailable', `worker ${name} has stopped`)));
    this.worker.unref(); // after the listeners: adding a 'message' listener refs the worker's port again
  }

  get alive(): boolean {
    return this.stopped === undefined;
  }

  get inFlight(): number {
    return this.runs;
  }

  /** Loads a session here; resolves with its id and contract. */
  async load(source: string | Uint8Array, options: SessionOptions): Promise<{ session: number; inputs: IoSpec[]; outputs: IoSpec[] }> {
    const reply = await this.request({ type: 'load', id: 0, source, options });
    if (reply.type !== 'loaded') throw new ServiceError('internal', `unexpected reply ${reply.type} to load`);
    this.sessions++;
    return { session: reply.session, inputs: [...reply.inputs], outputs: [...reply.outputs] };
  }

  async run(session: number, feeds: Record<string, Feed>, rgb8Output: string | undefined): Promise<Outputs | { rgb8: Rgb8Tensor }> {
    const wire: Record<string, WireFeed> = {};
    const transfer = new Set<ArrayBuffer>(); // a buffer listed twice cannot be transferred
    for (const [name, feed] of Object.entries(feeds)) {
      if (feed.keep !== undefined && this.kept.has(feed.keep)) {
        this.kept.delete(feed.keep); // refresh its place in the LRU order
        this.kept.set(feed.keep, true);
        wire[name] = { kept: feed.keep, dims: feed.dims };
        continue;
      }
      if (feed.keep !== undefined) this.keep(feed.keep);
      else if (feed.transfer) transfer.add(feed.data.buffer as ArrayBuffer);
      wire[name] = feed;
    }
    const evict = this.evicted;
    this.evicted = [];
    this.runs++;
    try {
      const reply = await this.request({ type: 'run', id: 0, session, feeds: wire, ...(rgb8Output !== undefined ? { rgb8Output } : {}), ...(evict.length ? { evict } : {}) }, [...transfer]);
      if (reply.type !== 'ran') throw new ServiceError('internal', `unexpected reply ${reply.type} to run`);
      return reply.outputs;
    } finally {
      this.runs--;
    }
  }

  async release(session: number): Promise<void> {
    if (!this.alive) return;
    await this.request({ type: 'release', id: 0, session });
    this.sessions--;
  }

  /** Releases every session and ends the thread. */
  async close(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.ref();
    this.worker.postMessage({ type: 'close' } satisfies WorkerRequest);
    await exited;
  }

  private keep(key: string): void {
    this.kept.set(key, true);
    if (this.kept.size > KEPT_FEEDS) {
      const oldest = this.kept.keys().next().value!;
      this.kept.delete(oldest);
      this.evicted.push(oldest);
    }
  }

  private request(message: WorkerRequest & { id: number }, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.stopped) return Promise.reject(this.stopped);
    const id = this.nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref(); // a reply is on its way: keep the process alive for it
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }
}

/** A session on one or more workers of a pool (several: the dispatcher sends each call to the least busy). */
export class WorkerModel extends ModelContract implements Model {
  private released = false;

  constructor(
    private readonly pool: WorkerPool,
    private readonly replicas: readonly (Replica & { readonly worker: SessionWorker })[],
    inputs: readonly IoSpec[],
    outputs: readonly IoSpec[],
    label: string,
  ) {
    super(inputs, outputs, label);
  }

  /** The workers that hold this model (a dedicated worker for a merged UNet; the pool's workers by placement). */
  get workers(): readonly SessionWorker[] {
    return this.replicas.map((r) => r.worker);
  }

  async run(feeds: Record<string, Feed>): Promise<Outputs> {
    return (await this.call(feeds, undefined)) as Outputs;
  }

  async runRgb8(feeds: Record<string, Feed>, output: string): Promise<Rgb8Tensor> {
    return ((await this.call(feeds, output)) as { rgb8: Rgb8Tensor }).rgb8;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await Promise.all(
      this.replicas.map(async ({ worker, session }) => {
        await worker.release(session);
        if (worker.dedicated && worker.sessions === 0) await this.pool.retire(worker);
      }),
    );
  }

  private call(feeds: Record<string, Feed>, rgb8Output: string | undefined): Promise<Outputs | { rgb8: Rgb8Tensor }> {
    if (this.released) return Promise.reject(new ServiceError('unavailable', `${this.label} was released`));
    this.validate(feeds); // fails here, before a round trip to the worker
    return this.pool.dispatcher.submit({ label: this.label, replicas: this.replicas, feeds, rgb8Output });
  }
}

export class WorkerPool {
  readonly dispatcher = new Dispatcher();
  private readonly fixed: SessionWorker[];
  private readonly dedicated = new Set<SessionWorker>();
  private spare: SessionWorker | undefined;
  private dedicatedCount = 0;

  constructor(readonly size: number = defaultWorkerCount()) {
    if (!Number.isInteger(size) || size < 1) throw new ServiceError('bad_request', `a worker pool needs at least one worker, got ${size}`, { field: 'workers' });
    this.fixed = Array.from({ length: size }, (_, i) => new SessionWorker(`onnx-${i}`, false));
  }

  /**
   * Loads a model on the pool's workers at `where` (indices, taken modulo the pool's size; each gets its own
   * session), or on one dedicated worker (`'own'`, a new thread for this model alone, or one from an earlier
   * `'own'` load, to put a second model beside the first).
   */
  async load(source: string | Uint8Array, options: SessionOptions, where: readonly number[] | 'own' | SessionWorker): Promise<WorkerModel> {
    const workers = where === 'own' ? [this.startDedicated()] : where instanceof SessionWorker ? [where] : [...new Set(where.map((i) => this.fixed[i % this.size]!))];
    if (workers.length === 0) throw new ServiceError('internal', `${options.label}: no worker to load it on`);
    let loaded;
    try {
      // bytes go to each worker by copy (a transfer would leave nothing for the next one)
      loaded = await Promise.all(workers.map(async (worker) => ({ worker, ...(await worker.load(source, options)) })));
    } catch (error) {
      if (where === 'own') await this.retire(workers[0]!);
      throw error;
    }
    const { inputs, outputs } = loaded[0]!;
    return new WorkerModel(this, loaded.map(({ worker, session }) => ({ worker, session })), inputs, outputs, options.label);
  }

  /** Starts a dedicated worker ahead of time, so the next `'own'` load does not wait for the thread to start. */
  prewarm(): void {
    this.spare ??= this.newDedicated();
  }

  /** Ends every worker (fixed and dedicated), releasing their sessions. Call before process.exit(). */
  async close(): Promise<void> {
    const all = [...this.fixed, ...this.dedicated, ...(this.spare ? [this.spare] : [])];
    this.spare = undefined;
    await Promise.all(all.map((w) => w.close()));
  }

  /** Ends a dedicated worker whose last session was released. */
  async retire(worker: SessionWorker): Promise<void> {
    this.dedicated.delete(worker);
    await worker.close();
  }

  private startDedicated(): SessionWorker {
    const worker = this.spare ?? this.newDedicated();
    this.spare = undefined;
    this.dedicated.add(worker);
    return worker;
  }

  private newDedicated(): SessionWorker {
    return new SessionWorker(`onnx-own-${++this.dedicatedCount}`, true);
  }
}

let shared: WorkerPool | undefined;

/** The process's pool, started on first use with defaultWorkerCount() workers. */
export function sharedPool(): WorkerPool {
  shared ??= new WorkerPool();
  return shared;
}

/** Closes the shared pool if it was started (before process.exit). */
export async function closeSharedPool(): Promise<void> {
  const pool = shared;
  shared = undefined;
  await pool?.close();
}

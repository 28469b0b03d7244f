/**
 * A UNet whose session lives on a worker thread (models/adapters/threaded-unet.worker.ts). Building a session blocks
 * the thread that builds it, so merged UNets are built off the main thread: streams keep running on the old
 * session until the new one is ready, then swap at a frame boundary. predict() posts the rows and awaits the
 * predictions (a message round trip, well under a millisecond for tiny-shapes rows). The worker also holds the
 * text encoders that go with the UNet when its adapters change them (`textEncoders`: LoRA layers, concept tokens).
 */
import { Worker } from 'node:worker_threads';
import { ClipTextEncoder, Unet, type HiddenLayer, type UnetRow } from '../components.ts';
import { ServiceError, type ErrorCode } from '../errors.ts';
import { OnnxModel, type Feed, type IoSpec, type SessionOptions } from '../runtime/onnx.ts';

const WORKER_URL = new URL('./threaded-unet.worker.ts', import.meta.url);
/**
 * The worker is TypeScript like the rest of the service: a small script registers tsx's loader in the
 * worker, then imports it (Node 20 does not carry a parent's --import loader into a worker's entry).
 */
const WORKER_BOOTSTRAP = `(async () => { (await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})).register(); await import(${JSON.stringify(WORKER_URL.href)}); })()`;

type Outputs = Record<string, { data: Float32Array; dims: number[] }>;
type Contract = { inputs: IoSpec[]; outputs: IoSpec[] };
type WorkerReply =
  | { type: 'started' }
  | ({ type: 'ready'; texts: Contract[] } & Contract)
  | { type: 'result'; id: number; eps: Float32Array[] }
  | { type: 'outputs'; id: number; outputs: Outputs }
  | { type: 'error'; id?: number; message: string; code?: ErrorCode };

/**
 * A session's contract without the session (it is on the worker): the component wrappers read inputs and
 * outputs from it; `run` is whatever reaches the worker (the UNet's is a bug: call Unet.predict).
 */
function contractModel({ inputs, outputs }: Contract, label: string, run: (feeds: Record<string, Feed>) => Promise<Outputs>): OnnxModel {
  const model = Object.create(OnnxModel.prototype) as OnnxModel;
  Object.defineProperties(model, {
    inputs: { value: inputs },
    outputs: { value: outputs },
    label: { value: label },
    run: { value: run },
    release: { value: () => Promise.resolve() },
  });
  return model;
}

/** A worker started and idle (not holding the process open), ready for the next load. */
let spare: Promise<Worker> | undefined;

function startWorker(): Promise<Worker> {
  const worker = new Worker(WORKER_BOOTSTRAP, { eval: true });
  const started = new Promise<Worker>((resolve, reject) => {
    worker.once('message', () => {
      worker.off('error', reject);
      worker.unref(); // idle: does not hold the process open
      resolve(worker);
    });
    worker.once('error', reject);
  });
  started.catch(() => (spare = undefined));
  return started;
}

/** A text encoder to load beside the UNet, and the hidden state the pack reads from it. */
export interface WorkerTextModel {
  readonly bytes: Uint8Array;
  readonly options: SessionOptions & { readonly layer?: HiddenLayer };
}

export class ThreadedUnet extends Unet {
  /** The text encoders on the same worker, in the order they were loaded with the UNet. */
  readonly textEncoders: readonly ClipTextEncoder[];
  private readonly pending = new Map<number, { resolve: (result: never) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private closed: ServiceError | undefined;
  private lastUsed = performance.now();

  private constructor(
    ready: Contract & { texts: Contract[] },
    label: string,
    private readonly worker: Worker,
    layers: readonly (HiddenLayer | undefined)[],
  ) {
    super(contractModel(ready, label, () => Promise.reject(new ServiceError('internal', `${label} runs on a worker thread: call Unet.predict`))));
    this.textEncoders = ready.texts.map(
      (contract, model) => new ClipTextEncoder(contractModel(contract, `text_encoder of ${label}`, (feeds) => this.call<Outputs>({ type: 'encode', model, feeds })), layers[model]),
    );
    worker.on('message', (msg: WorkerReply) => {
      if (msg.type === 'started' || msg.type === 'ready' || msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === 'result') p?.resolve(msg.eps as never);
      else if (msg.type === 'outputs') p?.resolve(msg.outputs as never);
      else p?.reject(new ServiceError(msg.code ?? 'inference_failed', msg.message));
      if (this.pending.size === 0) worker.unref(); // an idle worker does not keep the process alive
    });
    worker.unref();
    const stop = (error: ServiceError) => {
      this.closed ??= error;
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    worker.on('error', (e) => stop(new ServiceError('inference_failed', `${label} worker failed: ${e.message}`, { cause: e })));
    worker.on('exit', () => stop(new ServiceError('unavailable', `${label} was released`)));
  }

  /**
   * Builds a session from model bytes on a worker thread; resolves when it is ready to run. The worker is
   * one started ahead of time when there is one (starting a worker loads tsx and compiles the runtime
   * modules: tens to hundreds of ms of CPU better spent before a swap than during it); a new spare is
   * started after the build.
   */
  static async load(bytes: Uint8Array, options: SessionOptions, texts: readonly WorkerTextModel[] = []): Promise<ThreadedUnet> {
    const worker = await (spare ?? startWorker());
    spare = undefined;
    const listeners: { message?: (m: WorkerReply) => void; error?: (e: Error) => void; exit?: (code: number) => void } = {};
    const ready = await new Promise<WorkerReply>((resolve, reject) => {
      listeners.message = resolve;
      listeners.error = reject;
      listeners.exit = (code) => reject(new Error(`worker exited with code ${code} before the session was ready`));
      worker.once('message', listeners.message).once('error', listeners.error).once('exit', listeners.exit);
      worker.ref();
      const transfer = [...new Set([bytes.buffer as ArrayBuffer, ...texts.map((t) => t.bytes.buffer as ArrayBuffer)])];
      worker.postMessage({ type: 'load', bytes, options, texts: texts.map((t) => ({ bytes: t.bytes, options: t.options })) }, transfer);
    }).catch((cause: Error): WorkerReply => ({ type: 'error', message: cause.message }));
    worker.off('message', listeners.message!).off('error', listeners.error!).off('exit', listeners.exit!);
    setImmediate(() => (spare ??= startWorker()));
    if (ready.type !== 'ready') {
      await worker.terminate();
      const code = ready.type === 'error' ? (ready.code ?? 'model_invalid') : 'internal';
      throw new ServiceError(code, `${options.label}: ${ready.type === 'error' ? ready.message : 'unexpected worker reply'}`);
    }
    return new ThreadedUnet(ready, options.label, worker, texts.map((t) => t.options.layer));
  }

  /** Starts a spare worker now (e.g. when the service starts) so the first swap does not pay for it. */
  static prewarm(): void {
    spare ??= startWorker();
  }

  override predict(rows: readonly UnetRow[], latentHeight: number, latentWidth: number): Promise<Float32Array[]> {
    if (rows.length === 0) return Promise.resolve([]);
    const plain = rows.map((r) => ({ sample: r.sample, timestep: r.timestep, context: r.context, pooled: r.pooled, timeIds: r.timeIds, guidanceScale: r.guidanceScale }));
    return this.call({ type: 'predict', rows: plain, h: latentHeight, w: latentWidth });
  }

  /** Posts a request to the worker and awaits its reply. */
  private call<T>(request: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    this.lastUsed = performance.now();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (result: never) => void, reject });
      this.worker.ref(); // keep the process alive while a reply is on its way
      this.worker.postMessage({ ...request, id });
    });
  }

  /**
   * Releases the session once nothing has run on it for `idleMs` (checked every idleMs): for a UNet evicted
   * from a cache while a stream may still be using it.
   */
  releaseWhenIdle(idleMs: number): void {
    const check = () => {
      if (this.closed) return;
      const idle = performance.now() - this.lastUsed;
      if (this.pending.size === 0 && idle >= idleMs) void this.release();
      else setTimeout(check, Math.max(10, idleMs - idle)).unref();
    };
    setTimeout(check, idleMs).unref();
  }

  /** Releases the session and ends the worker; later predict() calls reject with 'unavailable'. */
  async release(): Promise<void> {
    if (this.closed) return;
    this.worker.ref();
    this.worker.postMessage({ type: 'close' });
    await new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
  }
}

/**
 * What a model looks like to the code that runs it, wherever its session lives: its tensor contract (read from
 * the session's metadata) and an async run. `onnx.ts` implements it on the calling thread (tools, and inside a
 * worker); `worker-pool.ts` implements it for sessions that live on worker threads (the service). Nothing here
 * imports onnxruntime-node, so the main thread of the service never loads it.
 */
import { ServiceError } from '../errors.ts';

export const PROVIDERS = ['cpu', 'cuda', 'tensorrt', 'dml', 'coreml'] as const;
export type Provider = (typeof PROVIDERS)[number];

export function parseProvider(value: string): Provider {
  if (!(PROVIDERS as readonly string[]).includes(value)) {
    throw new ServiceError('bad_request', `unknown execution provider "${value}" (known: ${PROVIDERS.join(', ')})`, { field: 'provider' });
  }
  return value as Provider;
}

export type DType = 'float32' | 'float16' | 'int32' | 'int64';

export interface IoSpec {
  readonly name: string;
  readonly dtype: DType;
  /** Numbers for fixed dims, strings for symbolic ones; [] for a scalar. */
  readonly dims: readonly (number | string)[];
}

export type FeedData = Float32Array | Int32Array | BigInt64Array;

export interface Feed {
  /** Float32Array for float inputs (float16 converted at the boundary), integer arrays for ids and timesteps. */
  readonly data: FeedData | Uint8Array;
  readonly dims: readonly number[];
  /**
   * 'rgb8': `data` holds interleaved RGB bytes [B, H, W, 3] for a [B, 3, H, W] float input in [-1, 1]; they are
   * converted in one pass on the thread that runs the session (the bytes are a quarter of the floats' size).
   */
  readonly layout?: 'rgb8';
  /** The caller hands the buffer over: a session on a worker receives it without a copy; do not touch it after. */
  readonly transfer?: boolean;
  /**
   * Immutable data the session's thread may keep under this key (a prompt context): a later call with the same
   * key sends no data. The key must name exactly this data.
   */
  readonly keep?: string;
}

export interface Tensor {
  readonly data: Float32Array;
  readonly dims: number[];
}

/** An image output as interleaved RGB bytes [B, H, W, 3]. */
export interface Rgb8Tensor {
  readonly data: Uint8Array;
  readonly dims: number[];
}

export type Outputs = Record<string, Tensor>;

export interface SessionOptions {
  readonly provider: Provider;
  /** Intra-op threads; 0 lets onnxruntime decide (one per physical core). */
  readonly threads: number;
  /** Shown in errors: "unet", "vae_decoder", a file path. */
  readonly label: string;
  /** For a model given as bytes: the folder its external data files are in (a model read from a path finds them itself). */
  readonly externalDataDir?: string | undefined;
}

export const DEFAULT_SESSION_OPTIONS: SessionOptions = Object.freeze({ provider: 'cpu', threads: 0, label: 'model' });

/** A loaded model, on this thread or on a worker. */
export interface Model {
  readonly inputs: readonly IoSpec[];
  readonly outputs: readonly IoSpec[];
  readonly label: string;
  input(name: string): IoSpec | undefined;
  output(name: string): IoSpec | undefined;
  describeContract(): string;
  /**
   * Runs the model. Float feeds are converted to the input's dtype (float16 included); outputs come back as
   * float32 (float16 converted). Feeds are checked against the contract first.
   */
  run(feeds: Record<string, Feed>): Promise<Outputs>;
  /**
   * Runs the model and returns one image output ([B, 3, H, W] in [-1, 1]) as RGB bytes [B, H, W, 3], clamped and
   * rounded on the thread that runs the session.
   */
  runRgb8(feeds: Record<string, Feed>, output: string): Promise<Rgb8Tensor>;
  release(): Promise<void>;
}

/** The contract half of a Model: lookups, descriptions and the feed check, shared by both kinds of session. */
export abstract class ModelContract {
  constructor(
    readonly inputs: readonly IoSpec[],
    readonly outputs: readonly IoSpec[],
    readonly label: string,
  ) {}

  input(name: string): IoSpec | undefined {
    return this.inputs.find((i) => i.name === name);
  }

  output(name: string): IoSpec | undefined {
    return this.outputs.find((o) => o.name === name);
  }

  describeContract(): string {
    return this.inputs.map((i) => `${i.name} ${i.dtype} [${i.dims.join(', ')}]`).join(', ');
  }

  /** Throws inference_failed naming every problem (missing, unexpected, rank, fixed dims, dtype family, size). */
  validate(feeds: Record<string, Feed>): void {
    const problems: string[] = [];
    for (const spec of this.inputs) {
      const feed = feeds[spec.name];
      if (!feed) {
        problems.push(`missing input ${spec.name}`);
        continue;
      }
      const dims = feedDims(feed);
      if (dims.length !== spec.dims.length) problems.push(`${spec.name} has rank ${dims.length}, the model expects ${spec.dims.length}`);
      spec.dims.forEach((d, i) => {
        if (typeof d === 'number' && d > 0 && dims[i] !== d) problems.push(`${spec.name} dim ${i} is ${dims[i]}, the model expects ${d}`);
      });
      const isFloat = feed.data instanceof Float32Array || (feed.layout === 'rgb8' && feed.data instanceof Uint8Array);
      const wantsFloat = spec.dtype === 'float32' || spec.dtype === 'float16';
      if (isFloat !== wantsFloat) problems.push(`${spec.name} is ${isFloat ? 'float' : 'integer'} data, the model expects ${spec.dtype}`);
      const size = feed.dims.reduce((a, b) => a * b, 1);
      if (size !== feed.data.length) problems.push(`${spec.name} has ${feed.data.length} values for dims [${feed.dims.join(', ')}]`);
    }
    for (const name of Object.keys(feeds)) {
      if (!this.input(name)) problems.push(`unexpected input ${name}`);
    }
    if (problems.length > 0) {
      throw new ServiceError('inference_failed', `${this.label}: ${problems.join('; ')}. Model inputs: ${this.describeContract()}. Given: ${describeFeeds(feeds)}`);
    }
  }
}

/** The dims a feed has as the model sees it: RGB bytes [B, H, W, 3] reach the model as [B, 3, H, W]. */
export function feedDims(feed: Feed): readonly number[] {
  if (feed.layout !== 'rgb8') return feed.dims;
  const [b, h, w, c] = feed.dims;
  return [b ?? 0, c ?? 0, h ?? 0, w ?? 0];
}

export function describeFeeds(feeds: Record<string, Feed>): string {
  return Object.entries(feeds)
    .map(([name, f]) => `${name} ${f.data.constructor.name}${f.layout ? ` (${f.layout})` : ''} [${f.dims.join(', ')}]`)
    .join(', ');
}

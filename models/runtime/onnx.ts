/**
 * The only module that imports onnxruntime-node. It opens sessions, reads their input/output contracts from
 * metadata, validates feeds before a run and converts float16 at the boundary, so the rest of the code sees
 * float32 and int arrays only. Importing it does nothing by itself.
 */
import * as ort from 'onnxruntime-node';
import { ServiceError } from '../errors.ts';
import { float16ToFloat32, float32ToFloat16 } from './float16.ts';

export const PROVIDERS = ['cpu', 'cuda', 'tensorrt', 'dml', 'coreml'] as const;
export type Provider = (typeof PROVIDERS)[number];

export type DType = 'float32' | 'float16' | 'int32' | 'int64';

export interface IoSpec {
  readonly name: string;
  readonly dtype: DType;
  /** Numbers for fixed dims, strings for symbolic ones; [] for a scalar. */
  readonly dims: readonly (number | string)[];
}

export type FeedData = Float32Array | Int32Array | BigInt64Array;
export interface Feed {
  readonly data: FeedData;
  readonly dims: readonly number[];
}

export interface SessionOptions {
  readonly provider: Provider;
  /** Intra-op threads; 0 lets onnxruntime decide. */
  readonly threads: number;
  /** Shown in errors: "unet", "vae_decoder", a file path. */
  readonly label: string;
  /** For a model given as bytes: the folder its external data files are in (a model read from a path finds them itself). */
  readonly externalDataDir?: string | undefined;
}

export const DEFAULT_SESSION_OPTIONS: SessionOptions = Object.freeze({ provider: 'cpu', threads: 0, label: 'model' });

/** Providers the installed onnxruntime-node build can run. */
export function availableProviders(): string[] {
  return ort.listSupportedBackends().map((b) => b.name);
}

export function parseProvider(value: string): Provider {
  if (!(PROVIDERS as readonly string[]).includes(value)) {
    throw new ServiceError('bad_request', `unknown execution provider "${value}" (known: ${PROVIDERS.join(', ')})`, { field: 'provider' });
  }
  return value as Provider;
}

function toDType(type: string, label: string, name: string): DType {
  if (type === 'float32' || type === 'float16' || type === 'int32' || type === 'int64') return type;
  throw new ServiceError('unsupported', `${label}: ${name} has type ${type}, expected float32, float16, int32 or int64`);
}

function specs(meta: readonly ort.InferenceSession.ValueMetadata[], label: string): IoSpec[] {
  return meta.map((m) => {
    if (!m.isTensor) throw new ServiceError('unsupported', `${label}: ${m.name} is not a tensor`);
    return { name: m.name, dtype: toDType(m.type, label, m.name), dims: [...m.shape] };
  });
}

export class OnnxModel {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputs: readonly IoSpec[],
    readonly outputs: readonly IoSpec[],
    readonly label: string,
  ) {}

  /** Opens a model from a file path or from model bytes (used by adapter merging). */
  static async load(source: string | Uint8Array, options: SessionOptions = DEFAULT_SESSION_OPTIONS): Promise<OnnxModel> {
    const { provider, threads, label } = options;
    if (!availableProviders().includes(provider)) {
      throw new ServiceError(
        'unsupported',
        `${label}: execution provider "${provider}" is not available in this onnxruntime-node build (available: ${availableProviders().join(', ')})`,
      );
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [provider],
      graphOptimizationLevel: 'all',
      ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
      ...(options.externalDataDir !== undefined ? { extra: { session: { model_external_initializers_file_folder_path: options.externalDataDir } } } : {}),
    };
    let session: ort.InferenceSession;
    try {
      session =
        typeof source === 'string'
          ? await ort.InferenceSession.create(source, sessionOptions)
          : await ort.InferenceSession.create(source, sessionOptions);
    } catch (cause) {
      throw describeLoadError(cause, label, provider);
    }
    return new OnnxModel(session, specs(session.inputMetadata, label), specs(session.outputMetadata, label), label);
  }

  input(name: string): IoSpec | undefined {
    return this.inputs.find((i) => i.name === name);
  }

  output(name: string): IoSpec | undefined {
    return this.outputs.find((o) => o.name === name);
  }

  /**
   * Runs the model. Float feeds are converted to the input's dtype (float16 included); outputs come back as
   * float32 (float16 converted) or as their integer arrays. Feeds are checked against the contract first.
   */
  async run(feeds: Record<string, Feed>): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    this.validate(feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const spec of this.inputs) {
      const feed = feeds[spec.name]!;
      ortFeeds[spec.name] = new ort.Tensor(spec.dtype, convertFeed(feed.data, spec.dtype), [...feed.dims]);
    }
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await this.session.run(ortFeeds);
    } catch (cause) {
      throw new ServiceError('inference_failed', `${this.label} failed: ${(cause as Error).message}. Inputs: ${this.describeFeeds(feeds)}`, { cause });
    }
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const [name, t] of Object.entries(results)) {
      out[name] = { data: toFloat32(t), dims: [...t.dims] };
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private validate(feeds: Record<string, Feed>): void {
    const problems: string[] = [];
    for (const spec of this.inputs) {
      const feed = feeds[spec.name];
      if (!feed) {
        problems.push(`missing input ${spec.name}`);
        continue;
      }
      if (feed.dims.length !== spec.dims.length) problems.push(`${spec.name} has rank ${feed.dims.length}, the model expects ${spec.dims.length}`);
      spec.dims.forEach((d, i) => {
        if (typeof d === 'number' && d > 0 && feed.dims[i] !== d) problems.push(`${spec.name} dim ${i} is ${feed.dims[i]}, the model expects ${d}`);
      });
      const isFloat = feed.data instanceof Float32Array;
      const wantsFloat = spec.dtype === 'float32' || spec.dtype === 'float16';
      if (isFloat !== wantsFloat) problems.push(`${spec.name} is ${isFloat ? 'float' : 'integer'} data, the model expects ${spec.dtype}`);
      const size = feed.dims.reduce((a, b) => a * b, 1);
      if (size !== feed.data.length) problems.push(`${spec.name} has ${feed.data.length} values for dims [${feed.dims.join(', ')}]`);
    }
    for (const name of Object.keys(feeds)) {
      if (!this.input(name)) problems.push(`unexpected input ${name}`);
    }
    if (problems.length > 0) {
      throw new ServiceError('inference_failed', `${this.label}: ${problems.join('; ')}. Model inputs: ${this.describeContract()}. Given: ${this.describeFeeds(feeds)}`);
    }
  }

  describeContract(): string {
    return this.inputs.map((i) => `${i.name} ${i.dtype} [${i.dims.join(', ')}]`).join(', ');
  }

  private describeFeeds(feeds: Record<string, Feed>): string {
    return Object.entries(feeds)
      .map(([name, f]) => `${name} ${f.data.constructor.name} [${f.dims.join(', ')}]`)
      .join(', ');
  }
}

/** How to get the GPU providers: onnxruntime-node's install script fetches them from nuget.org (npm ci skips it here). */
export const CUDA_INSTALL_HINT = 'reinstall onnxruntime-node with its CUDA 12 binaries (ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node; needs CUDA 12 and cuDNN 9)';

function describeLoadError(cause: unknown, label: string, provider: Provider): ServiceError {
  const message = (cause as Error)?.message ?? String(cause);
  // the CPU-only install lists cuda and tensorrt but lacks their libraries (libonnxruntime_providers_*.so)
  if ((provider === 'cuda' || provider === 'tensorrt') && /libonnxruntime_providers_|Failed to load (shared )?librar/i.test(message)) {
    return new ServiceError('unsupported', `${label}: execution provider "${provider}" is not installed: ${CUDA_INSTALL_HINT}. onnxruntime: ${message.split('\n')[0]!.slice(0, 300)}`, { cause });
  }
  // e.g. "Could not find an implementation for NhwcConv(1) node with name ..." from GPU-only exports
  const op = /implementation for (\w+)\(/.exec(message)?.[1];
  if (op) return new ServiceError('unsupported', `${label}: operator ${op} has no kernel in this execution provider (${message})`, { cause });
  if (/No such file|ENOENT|Load model from .* failed|open file/i.test(message)) {
    return new ServiceError('model_invalid', `${label}: cannot open model: ${message}`, { cause });
  }
  return new ServiceError('model_invalid', `${label}: cannot load model: ${message}`, { cause });
}

function convertFeed(data: FeedData, dtype: DType): Float32Array | Uint16Array | Int32Array | BigInt64Array {
  switch (dtype) {
    case 'float32':
      return data as Float32Array;
    case 'float16':
      return float32ToFloat16(data as Float32Array);
    case 'int32':
      return data instanceof Int32Array ? data : Int32Array.from(data as BigInt64Array, (v) => Number(v));
    case 'int64':
      return data instanceof BigInt64Array ? data : BigInt64Array.from(data as Int32Array, (v) => BigInt(v));
  }
}

function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  return Float32Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}

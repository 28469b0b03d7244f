/**
 * The only module that imports onnxruntime-node. It opens sessions on the calling thread (in the service, that
 * is a worker of worker-pool.ts), reads their input/output contracts from metadata, validates feeds before a run
 * and converts at the boundary: float16 <-> float32, and RGB bytes <-> planar images in [-1, 1], so the rest of
 * the code sees float32 and int arrays only. Importing it does nothing by itself.
 */
import * as ort from 'onnxruntime-node';
import { ServiceError } from '../errors.ts';
import { ModelContract, feedDims, describeFeeds, DEFAULT_SESSION_OPTIONS, type DType, type Feed, type FeedData, type IoSpec, type Model, type Outputs, type Provider, type Rgb8Tensor, type SessionOptions } from './contract.ts';
import { float16ToFloat32, float32ToFloat16 } from './float16.ts';
import { planarToRgb8, rgb8ToPlanar } from './image-layout.ts';

export { PROVIDERS, DEFAULT_SESSION_OPTIONS, parseProvider, type Provider, type DType, type IoSpec, type Feed, type FeedData, type SessionOptions } from './contract.ts';

/**
 * Session config entries (onnxruntime_session_options_config_keys.h): worker threads that find no work sleep
 * instead of spinning. A spinning thread burned a whole core while its session was idle (REFERENCE §9), stealing
 * it from the other stages.
 */
const NO_SPINNING = Object.freeze({ session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });

/** onnxruntime's options for a session: the provider, all graph optimisations, the threads, no spinning. */
export function ortSessionOptions({ provider, threads, externalDataDir }: SessionOptions): ort.InferenceSession.SessionOptions {
  const externalData = externalDataDir !== undefined ? { model_external_initializers_file_folder_path: externalDataDir } : {};
  return {
    executionProviders: [provider],
    graphOptimizationLevel: 'all',
    ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
    extra: { session: { ...NO_SPINNING.session, ...externalData } },
  };
}

/** Providers the installed onnxruntime-node build can run. */
export function availableProviders(): string[] {
  return ort.listSupportedBackends().map((b) => b.name);
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

/** A session on the calling thread: run() blocks this thread for the model's time (ORT's run is synchronous). */
export class OnnxModel extends ModelContract implements Model {
  private constructor(
    private readonly session: ort.InferenceSession,
    inputs: readonly IoSpec[],
    outputs: readonly IoSpec[],
    label: string,
  ) {
    super(inputs, outputs, label);
  }

  /** Opens a model from a file path or from model bytes (used by adapter merging). */
  static async load(source: string | Uint8Array, options: SessionOptions = DEFAULT_SESSION_OPTIONS): Promise<OnnxModel> {
    const { provider, label } = options;
    if (!availableProviders().includes(provider)) {
      throw new ServiceError(
        'unsupported',
        `${label}: execution provider "${provider}" is not available in this onnxruntime-node build (available: ${availableProviders().join(', ')})`,
      );
    }
    const sessionOptions = ortSessionOptions(options);
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

  async run(feeds: Record<string, Feed>): Promise<Outputs> {
    const results = await this.runSession(feeds);
    const out: Outputs = {};
    for (const [name, t] of Object.entries(results)) out[name] = { data: toFloat32(t), dims: [...t.dims] };
    return out;
  }

  async runRgb8(feeds: Record<string, Feed>, output: string): Promise<Rgb8Tensor> {
    const t = (await this.runSession(feeds))[output];
    if (!t) throw new ServiceError('internal', `${this.label} has no output ${output}`);
    const [b, c, h, w] = t.dims as [number, number, number, number];
    if (t.dims.length !== 4 || c !== 3) throw new ServiceError('inference_failed', `${this.label}: ${output} is [${t.dims.join(', ')}], not an RGB image [B, 3, H, W]`);
    return { data: planarToRgb8(toFloat32(t), b, h, w), dims: [b, h, w, 3] };
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private async runSession(feeds: Record<string, Feed>): Promise<ort.InferenceSession.ReturnType> {
    this.validate(feeds);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const spec of this.inputs) {
      const feed = feeds[spec.name]!;
      const data = feed.layout === 'rgb8' ? rgb8ToPlanar(feed.data as Uint8Array, ...(feed.dims as [number, number, number])) : (feed.data as FeedData);
      ortFeeds[spec.name] = new ort.Tensor(spec.dtype, convertFeed(data, spec.dtype), [...feedDims(feed)]);
    }
    try {
      return await this.session.run(ortFeeds);
    } catch (cause) {
      throw new ServiceError('inference_failed', `${this.label} failed: ${(cause as Error).message}. Inputs: ${describeFeeds(feeds)}`, { cause });
    }
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

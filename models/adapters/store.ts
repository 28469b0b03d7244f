/**
 * The adapter store: a folder of kohya LoRA safetensors files beside a pack's UNet, uploads into it, and
 * merged UNets built in the background (on worker threads, see worker-unet.ts) with an LRU cache keyed by the
 * sorted adapters and weights and bounded by the bytes of weights the merged sessions hold (and a count).
 * Concurrent requests for the same combination share one build; an evicted UNet is released once no stream has
 * used it for EVICTED_IDLE_MS. Merging never writes to disk; uploads are checked completely (format, keys, shapes
 * against the models) before a file is written, and are written atomically (temporary file + rename).
 * A text encoder gets its own merged copy, built on the same worker as the UNet, when the adapters have LoRA
 * layers for it (lora_te_, lora_te1_, lora_te2_) or bundle concept tokens (learned embeddings for trigger words).
 */
import { statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { ClipTextEncoder, HiddenLayer, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { PackOptions } from '../pack.ts';
import { DEFAULT_SESSION_OPTIONS, type SessionOptions } from '../runtime.ts';
import { addConceptTokens, tokenTable, type ConceptTokenIds } from './concept-tokens.ts';
import { readKohyaAdapter, type KohyaAdapter, type LoraTarget } from './kohya.ts';
import { matchAdapter, mergeAdapters, type WeightedAdapter } from './merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from './onnx-graph.ts';
import { DEFAULT_SAFETENSORS_LIMITS, parseSafetensors } from './safetensors.ts';
import { WorkerUnet } from './worker-unet.ts';

/** Adapter names: lower-case letters, digits, '_' and '-' (they become file names: no path can be formed). */
export const ADAPTER_NAME = /^[a-z0-9_-]{1,64}$/;
export const ADAPTER_EXTENSION = '.safetensors';
/** The shared orthogonal basis shipped beside the adapters; not an adapter. */
export const BASIS_FILE_NAME = 'orthogonal-basis';

export interface AdapterLimits {
  /** Largest adapter file, bytes (SD 1.5 LoRAs are 10-150 MB; tiny-shapes ones ~0.5 MB). */
  readonly maxBytes: number;
  /** Most adapters merged at once. */
  readonly maxAdapters: number;
  /** Largest |weight| (lambda); the paper uses 0.6-1. */
  readonly maxWeight: number;
}

export const DEFAULT_ADAPTER_LIMITS: AdapterLimits = Object.freeze({ maxBytes: 256 * 2 ** 20, maxAdapters: 8, maxWeight: 2 });
/**
 * Weights merged sessions may hold together before the least recently used is evicted (the newest is always
 * kept): each merged variant is a full copy of the UNet (SD 1.5 fp32 3.4 GB, SDXL 10 GB), so a count alone would
 * not bound memory.
 */
export const DEFAULT_MERGED_BYTES = 4 * 2 ** 30;
/** A merged UNet evicted from the cache is released after this long without a prediction (streams may still hold it). */
export const EVICTED_IDLE_MS = 60_000;

export interface AdapterInfo {
  readonly name: string;
  readonly bytes: number;
  readonly rank: number;
  /** LoRA layers in the file. */
  readonly layers: number;
  /** From the metadata when present: 'orthogonal' | 'lora' | ... */
  readonly method: string | undefined;
  readonly concept: string | undefined;
  readonly trigger: string | undefined;
  /** Prompt words the adapter brings a learned embedding for (they read as its concept only while it is active). */
  readonly conceptTokens: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
}

export interface AdapterChoice {
  readonly name: string;
  readonly weight: number;
}

/** How prompts are encoded for a merged UNet whose adapters change a text encoder (LoRA layers or concept tokens). */
export interface ConceptText {
  /** Cache key of the adapter combination (prompt embeddings depend on it). */
  readonly key: string;
  /** Per text tower of the pack: its merged encoder, or undefined where the tower is unchanged. */
  readonly encoders: readonly (ClipTextEncoder | undefined)[];
  readonly tokens: ConceptTokenIds;
}

/** A text encoder adapters may change, with the hidden state the pack reads from it. */
export interface TextEncoderPath {
  readonly path: string;
  readonly layer: HiddenLayer;
}

/**
 * The base models adapters apply to: the UNet, and the pack's text encoders in tower order (SDXL: text_encoder,
 * text_encoder_2). `textEncoder` is the single-tower shorthand.
 */
export interface BaseModelPaths {
  readonly unet: string;
  readonly textEncoder?: string | undefined;
  readonly textEncoders?: readonly TextEncoderPath[] | undefined;
}

/** The LoRA target of each text tower. */
const TOWER_TARGETS: readonly LoraTarget[] = ['text_encoder', 'text_encoder_2'];

interface BaseModel {
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly index: OnnxGraphIndex;
  /** Bytes of the weights a session of it holds (model.onnx and its external data). */
  readonly weightBytes: number;
}

export interface MergedUnet {
  readonly unet: Unet;
  /** Present when the adapters change a text encoder (LoRA layers or concept tokens). */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
  /** Weights the merged sessions hold (the cache's byte bound counts these). */
  readonly weightBytes: number;
}

/** Cache key: adapters sorted by name, zero weights dropped ("" is the base UNet). */
export function adapterKey(adapters: readonly AdapterChoice[]): string {
  return [...adapters]
    .filter((a) => a.weight !== 0)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((a) => `${a.name}:${a.weight}`)
    .join(',');
}

function infoOf(name: string, bytes: number, adapter: KohyaAdapter): AdapterInfo {
  const m = adapter.metadata;
  return {
    name,
    bytes,
    rank: adapter.layers[0]?.rank ?? 0,
    layers: adapter.layers.length,
    method: m['method'],
    concept: m['concept'],
    trigger: m['trigger'],
    conceptTokens: adapter.embeddings.map((e) => e.word),
    metadata: m,
  };
}

export class AdapterStore {
  readonly limits: AdapterLimits;
  private readonly dir: string;
  private readonly cache = new Map<string, { merged: Promise<MergedUnet>; bytes: number }>();
  private readonly adapters = new Map<string, { mtimeMs: number; size: number; adapter: KohyaAdapter; info: AdapterInfo }>();
  private readonly bases = new Map<string, Promise<BaseModel>>();
  private readonly textEncoders: readonly TextEncoderPath[];

  constructor(
    adapterDir: string,
    private readonly baseModels: BaseModelPaths,
    private readonly options: PackOptions,
    private readonly cacheSize = 4,
    limits: Partial<AdapterLimits> = {},
    /** Weights the cached merged sessions may hold together (DEFAULT_MERGED_BYTES). */
    private readonly maxMergedBytes = DEFAULT_MERGED_BYTES,
  ) {
    this.dir = resolve(adapterDir);
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...limits };
    if (!Number.isInteger(cacheSize) || cacheSize < 1) throw new ServiceError('bad_request', `adapter cache size must be a positive integer, got ${cacheSize}`);
    this.textEncoders = baseModels.textEncoders ?? (baseModels.textEncoder ? [{ path: baseModels.textEncoder, layer: 'last' }] : []);
  }

  /** Bytes of weights the cached merged sessions hold (those still building count when done). */
  get mergedBytes(): number {
    return [...this.cache.values()].reduce((n, e) => n + e.bytes, 0);
  }

  /** The adapters in the folder (valid files only, sorted by name). Reads headers of new or changed files. */
  async list(): Promise<AdapterInfo[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((f) => f.endsWith(ADAPTER_EXTENSION)).map((f) => f.slice(0, -ADAPTER_EXTENSION.length));
    } catch {
      return []; // no adapter folder: no adapters
    }
    const out: AdapterInfo[] = [];
    for (const name of names.sort()) {
      if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) continue;
      try {
        out.push((await this.load(name)).info);
      } catch {
        // a broken file is skipped here; merged() with its name reports the error
      }
    }
    return out;
  }

  /** Checks and stores an uploaded adapter. Nothing is written unless the file is valid for this UNet. */
  async add(name: string, bytes: Uint8Array): Promise<AdapterInfo> {
    // 1. name and size
    if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) {
      throw new ServiceError('bad_request', `adapter name must match ${ADAPTER_NAME} (lower-case letters, digits, _ and -, at most 64) and not be "${BASIS_FILE_NAME}"`, { field: 'name' });
    }
    if (bytes.length > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${bytes.length} bytes; the limit is ${this.limits.maxBytes}`);
    const path = this.pathOf(name);
    if (this.exists(path)) throw new ServiceError('conflict', `adapter ${name} already exists`, { field: 'name' });
    // 2. format, then keys and shapes against the UNet
    const adapter = readKohyaAdapter(parseSafetensors(bytes, `adapter ${name}`, { ...DEFAULT_SAFETENSORS_LIMITS, maxBytes: this.limits.maxBytes }), `adapter ${name}`);
    let matched = matchAdapter((await this.baseModel(this.baseModels.unet)).index, adapter, `adapter ${name}`).matched;
    for (const [i, te] of this.textEncoders.entries()) {
      matched += matchAdapter((await this.baseModel(te.path)).index, adapter, `adapter ${name}`, TOWER_TARGETS[i]).matched;
    }
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet or text encoders (e.g. ${adapter.layers[0]!.key})`);
    await this.checkEmbeddings(name, adapter);
    // 3. atomic write
    const tmp = join(this.dir, `.${name}.${process.pid}.${Date.now()}.tmp`);
    try {
      await mkdir(this.dir, { recursive: true });
      await writeFile(tmp, bytes, { flag: 'wx' });
      await rename(tmp, path);
    } catch (cause) {
      await unlink(tmp).catch(() => undefined);
      throw new ServiceError('internal', `cannot store adapter ${name}: ${(cause as Error).message}`, { cause });
    }
    return (await this.load(name)).info;
  }

  /** A merged UNet if it is already built (for a swap at a frame boundary without waiting). */
  ready(adapters: readonly AdapterChoice[]): Promise<MergedUnet> | undefined {
    return this.cache.get(adapterKey(adapters))?.merged;
  }

  /**
   * The UNet with these adapters merged at these weights. Built in the background (the promise resolves
   * when the session is ready); cached, least recently used evicted past cacheSize; one build per key.
   */
  merged(adapters: readonly AdapterChoice[]): Promise<MergedUnet> {
    try {
      this.validate(adapters);
    } catch (error) {
      return Promise.reject(error);
    }
    const key = adapterKey(adapters);
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key); // refresh LRU order
      this.cache.set(key, hit);
      return hit.merged;
    }
    const entry = { merged: this.build(adapters.filter((a) => a.weight !== 0), key), bytes: 0 };
    entry.merged.then(
      (m) => {
        entry.bytes = m.weightBytes;
        this.evict();
      },
      () => {
        if (this.cache.get(key) === entry) this.cache.delete(key);
      },
    );
    this.cache.set(key, entry);
    this.evict();
    return entry.merged;
  }

  /** Drops least recently used entries past the count or byte bound; the newest always stays. */
  private evict(): void {
    while (this.cache.size > 1 && (this.cache.size > this.cacheSize || this.mergedBytes > this.maxMergedBytes)) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      evicted.merged.then((m) => (m.unet as WorkerUnet).releaseWhenIdle(EVICTED_IDLE_MS), () => undefined);
    }
  }

  private validate(adapters: readonly AdapterChoice[]): void {
    if (adapters.length > this.limits.maxAdapters) throw new ServiceError('bad_request', `at most ${this.limits.maxAdapters} adapters at once, got ${adapters.length}`, { field: 'adapters' });
    const seen = new Set<string>();
    for (const a of adapters) {
      if (typeof a.name !== 'string' || !ADAPTER_NAME.test(a.name)) throw new ServiceError('bad_request', `adapter name ${JSON.stringify(a.name)} is not valid`, { field: 'adapters' });
      if (seen.has(a.name)) throw new ServiceError('bad_request', `adapter ${a.name} is listed twice`, { field: 'adapters' });
      seen.add(a.name);
      if (typeof a.weight !== 'number' || !Number.isFinite(a.weight) || Math.abs(a.weight) > this.limits.maxWeight) {
        throw new ServiceError('bad_request', `adapter ${a.name}: weight must be a number in [-${this.limits.maxWeight}, ${this.limits.maxWeight}], got ${a.weight}`, { field: 'adapters' });
      }
      if (a.name === BASIS_FILE_NAME || !this.exists(this.pathOf(a.name))) throw new ServiceError('not_found', `no adapter named ${a.name}`, { field: 'adapters' });
    }
  }

  /** Rejects bundled embeddings whose width differs from the text encoder's tokens. */
  private async checkEmbeddings(name: string, adapter: KohyaAdapter): Promise<void> {
    const first = this.textEncoders[0];
    if (adapter.embeddings.length === 0 || !first) return;
    const dim = tokenTable((await this.baseModel(first.path)).index).dims[1];
    const wrong = adapter.embeddings.find((e) => e.dim !== dim);
    if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
  }

  private async build(adapters: readonly AdapterChoice[], key: string): Promise<MergedUnet> {
    const options = { ...DEFAULT_SESSION_OPTIONS, provider: this.options.provider, threads: this.options.threads };
    const unetBase = await this.baseModel(this.baseModels.unet);
    const unetOptions = { ...options, externalDataDir: dirname(unetBase.path) };
    const t0 = performance.now();
    if (adapters.length === 0) {
      const unet = await WorkerUnet.load(unetBase.bytes.slice(), { ...unetOptions, label: 'unet' });
      return { unet, warnings: [], mergeMs: 0, buildMs: performance.now() - t0, weightBytes: unetBase.weightBytes };
    }
    // 1. the UNet
    const weighted: WeightedAdapter[] = await Promise.all(adapters.map(async (a) => ({ name: a.name, weight: a.weight, adapter: (await this.load(a.name)).adapter })));
    const merged = await mergeAdapters(unetBase.bytes, unetBase.index, weighted, 'unet', { externalDir: dirname(unetBase.path) });
    const warnings = [...merged.warnings];
    let weightBytes = unetBase.weightBytes;
    // 2. text encoders with LoRA layers, the first also with concept tokens
    const embeddings = weighted.flatMap((w) => w.adapter.embeddings.map((embedding) => ({ adapter: w.name, embedding })));
    const texts: { tower: number; bytes: Uint8Array; options: SessionOptions & { layer: HiddenLayer } }[] = [];
    let tokens: ConceptTokenIds = new Map();
    for (const [tower, target] of TOWER_TARGETS.entries()) {
      const hasLayers = weighted.some((w) => w.adapter.layers.some((l) => l.target === target));
      const concepts = tower === 0 ? embeddings : [];
      if (!hasLayers && concepts.length === 0) continue;
      const te = this.textEncoders[tower];
      if (!te) {
        if (hasLayers) warnings.push(`no ${target} to merge the adapters' ${target} layers into: they were ignored`);
        if (concepts.length > 0) warnings.push(`no text encoder to add the concept tokens ${concepts.map((e) => e.embedding.word).join(', ')} to: their words are read as plain text`);
        continue;
      }
      const base = await this.baseModel(te.path);
      let bytes = base.bytes;
      if (hasLayers) {
        const m = await mergeAdapters(base.bytes, base.index, weighted, target, { target, externalDir: dirname(te.path) });
        warnings.push(...m.warnings);
        bytes = m.bytes;
      }
      if (concepts.length > 0) {
        const added = addConceptTokens(bytes, bytes === base.bytes ? base.index : indexOnnxModel(bytes, target), concepts);
        bytes = added.bytes;
        tokens = added.ids;
      }
      weightBytes += base.weightBytes;
      texts.push({ tower, bytes, options: { ...options, label: `${target}+${key}`, externalDataDir: dirname(te.path), layer: te.layer } });
    }
    // 3. sessions on a worker thread
    const t1 = performance.now();
    const unet = await WorkerUnet.load(merged.bytes, { ...unetOptions, label: `unet+${key}` }, texts.map((t) => ({ bytes: t.bytes, options: t.options })));
    const encoders: (ClipTextEncoder | undefined)[] = [];
    texts.forEach((t, i) => (encoders[t.tower] = unet.textEncoders[i]));
    const text = texts.length > 0 ? { key, encoders, tokens } : undefined;
    return { unet, text, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1, weightBytes };
  }

  /** A base model's bytes, graph index and weight size, read once. */
  private baseModel(path: string): Promise<BaseModel> {
    let base = this.bases.get(path);
    if (!base) {
      base = readFile(path)
        .catch((cause) => {
          throw new ServiceError('model_invalid', `cannot read the model ${path}: ${(cause as Error).message}`, { cause });
        })
        .then(async (buf) => {
          const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
          const index = indexOnnxModel(bytes, path);
          const files = new Set([...index.initializers.values()].flatMap((i) => (i.external ? [i.external.location] : [])));
          let weightBytes = bytes.length;
          for (const f of files) weightBytes += await stat(join(dirname(path), f)).then((s) => s.size, () => 0);
          return { path, bytes, index, weightBytes };
        });
      base.catch(() => this.bases.delete(path));
      this.bases.set(path, base);
    }
    return base;
  }

  /** Parses an adapter file, cached by modification time and size (read asynchronously: files can be 100+ MB). */
  private async load(name: string): Promise<{ adapter: KohyaAdapter; info: AdapterInfo }> {
    const path = this.pathOf(name);
    let file;
    try {
      file = await stat(path);
    } catch (cause) {
      throw new ServiceError('not_found', `no adapter named ${name}`, { cause });
    }
    const hit = this.adapters.get(name);
    if (hit && hit.mtimeMs === file.mtimeMs && hit.size === file.size) return hit;
    if (file.size > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${file.size} bytes; the limit is ${this.limits.maxBytes}`);
    const bytes = await readFile(path);
    const adapter = readKohyaAdapter(parseSafetensors(bytes, `adapter ${name}`, { ...DEFAULT_SAFETENSORS_LIMITS, maxBytes: this.limits.maxBytes }), `adapter ${name}`);
    const entry = { mtimeMs: file.mtimeMs, size: file.size, adapter, info: infoOf(name, file.size, adapter) };
    this.adapters.set(name, entry);
    return entry;
  }

  private pathOf(name: string): string {
    return join(this.dir, name + ADAPTER_EXTENSION);
  }

  private exists(path: string): boolean {
    try {
      return statSync(path).isFile();
    } catch {
      return false;
    }
  }
}

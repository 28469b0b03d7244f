/**
 * The adapter store: a folder of kohya LoRA safetensors files beside a pack's UNet, uploads into it, and
 * merged UNets built in the background (on worker threads, see threaded-unet.ts) with a bounded LRU cache keyed
 * by the sorted adapters and weights. Concurrent requests for the same combination share one build; an
 * evicted UNet is released once no stream has used it for EVICTED_IDLE_MS. Merging never writes to disk; uploads are
 * checked completely (format, keys, shapes against the UNet) before a file is written, and are written
 * atomically (temporary file + rename). Adapters that bundle concept tokens (learned embeddings for their
 * trigger words) also get a text encoder with those tokens added, built on the same worker as the UNet.
 */
import { statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { ClipTextEncoder, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { PackOptions } from '../pack.ts';
import { DEFAULT_SESSION_OPTIONS } from '../runtime/onnx.ts';
import { addConceptTokens, tokenTable, type ConceptTokenIds } from './concept-tokens.ts';
import { readKohyaAdapter, type KohyaAdapter } from './kohya.ts';
import { matchAdapter, mergeAdapters, type WeightedAdapter } from './merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from './onnx-graph.ts';
import { DEFAULT_SAFETENSORS_LIMITS, parseSafetensors } from './safetensors.ts';
import { WorkerUnet } from './threaded-unet.ts';

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

/** How prompts are encoded for a merged UNet whose adapters bring concept tokens. */
export interface ConceptText {
  /** Cache key of the adapter combination (prompt embeddings depend on it). */
  readonly key: string;
  readonly encoder: ClipTextEncoder;
  readonly tokens: ConceptTokenIds;
}

/** The base models adapters apply to (the text encoder only for adapters with concept tokens). */
export interface BaseModelPaths {
  readonly unet: string;
  readonly textEncoder?: string | undefined;
}

export interface MergedUnet {
  readonly unet: Unet;
  /** Present when the adapters bring concept tokens. */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
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
  private readonly cache = new Map<string, Promise<MergedUnet>>();
  private readonly adapters = new Map<string, { mtimeMs: number; size: number; adapter: KohyaAdapter; info: AdapterInfo }>();
  private readonly bases = new Map<string, Promise<{ bytes: Uint8Array; index: OnnxGraphIndex }>>();

  constructor(
    adapterDir: string,
    private readonly baseModels: BaseModelPaths,
    private readonly options: PackOptions,
    private readonly cacheSize = 4,
    limits: Partial<AdapterLimits> = {},
  ) {
    this.dir = resolve(adapterDir);
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...limits };
    if (!Number.isInteger(cacheSize) || cacheSize < 1) throw new ServiceError('bad_request', `adapter cache size must be a positive integer, got ${cacheSize}`);
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
    const { index } = await this.baseModel(this.baseModels.unet);
    const { matched } = matchAdapter(index, adapter, `adapter ${name}`);
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet (e.g. ${adapter.layers[0]!.key})`);
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
    return this.cache.get(adapterKey(adapters));
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
      return hit;
    }
    const pending = this.build(adapters.filter((a) => a.weight !== 0), key);
    pending.catch(() => {
      if (this.cache.get(key) === pending) this.cache.delete(key);
    });
    this.cache.set(key, pending);
    while (this.cache.size > this.cacheSize) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      evicted.then((m) => (m.unet as WorkerUnet).releaseWhenIdle(EVICTED_IDLE_MS), () => undefined);
    }
    return pending;
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
    if (adapter.embeddings.length === 0 || !this.baseModels.textEncoder) return;
    const dim = tokenTable((await this.baseModel(this.baseModels.textEncoder)).index).dims[1];
    const wrong = adapter.embeddings.find((e) => e.dim !== dim);
    if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
  }

  private async build(adapters: readonly AdapterChoice[], key: string): Promise<MergedUnet> {
    const options = { ...DEFAULT_SESSION_OPTIONS, provider: this.options.provider, threads: this.options.threads };
    const { bytes, index } = await this.baseModel(this.baseModels.unet);
    const t0 = performance.now();
    if (adapters.length === 0) {
      const unet = await WorkerUnet.load(bytes.slice(), { ...options, label: 'unet' });
      return { unet, warnings: [], mergeMs: 0, buildMs: performance.now() - t0 };
    }
    const weighted: WeightedAdapter[] = await Promise.all(adapters.map(async (a) => ({ name: a.name, weight: a.weight, adapter: (await this.load(a.name)).adapter })));
    const merged = await mergeAdapters(bytes, index, weighted, 'unet');
    const warnings = [...merged.warnings];
    const embeddings = weighted.flatMap((w) => w.adapter.embeddings.map((embedding) => ({ adapter: w.name, embedding })));
    let text: { bytes: Uint8Array; ids: ConceptTokenIds } | undefined;
    if (embeddings.length > 0 && this.baseModels.textEncoder) {
      const base = await this.baseModel(this.baseModels.textEncoder);
      text = addConceptTokens(base.bytes, base.index, embeddings);
    } else if (embeddings.length > 0) {
      warnings.push(`no text encoder to add the concept tokens ${embeddings.map((e) => e.embedding.word).join(', ')} to: their words are read as plain text`);
    }
    const t1 = performance.now();
    const unet = await WorkerUnet.load(merged.bytes, { ...options, label: `unet+${key}` }, text && { bytes: text.bytes, options: { ...options, label: `text_encoder+${key}` } });
    const concept = text && { key, encoder: unet.textEncoder!, tokens: text.ids };
    return { unet, text: concept, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1 };
  }

  /** A base model's bytes and graph index, read once. */
  private baseModel(path: string): Promise<{ bytes: Uint8Array; index: OnnxGraphIndex }> {
    let base = this.bases.get(path);
    if (!base) {
      base = readFile(path)
        .catch((cause) => {
          throw new ServiceError('model_invalid', `cannot read the model ${path}: ${(cause as Error).message}`, { cause });
        })
        .then((buf) => {
          const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
          return { bytes, index: indexOnnxModel(bytes, path) };
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

/**
 * The adapter store a pack's engine talks to: the adapter folder (adapter-files.ts: listing and uploads,
 * checked against the pack's UNet and text encoder) and the merged UNets built from it (merged-unets.ts).
 */
import { readFile } from 'node:fs/promises';
import { ServiceError } from '../errors.ts';
import type { ModelSessions } from '../sessions.ts';
import { AdapterFiles, type AdapterInfo } from './adapter-files.ts';
import { adapterKey, checkAdapterChoices, DEFAULT_ADAPTER_LIMITS, type AdapterChoice, type AdapterLimits } from './choices.ts';
import { tokenTable } from './concept-tokens.ts';
import type { KohyaAdapter } from './kohya.ts';
import { matchAdapter } from './merge.ts';
import { MergedUnets, type BaseModel, type MergedUnet } from './merged-unets.ts';
import { indexOnnxModel } from './onnx-graph.ts';

export type { AdapterInfo } from './adapter-files.ts';
export type { ConceptText, MergedUnet } from './merged-unets.ts';

/** The base models adapters apply to (the text encoder only for adapters with concept tokens). */
export interface BaseModelPaths {
  readonly unet: string;
  readonly textEncoder?: string | undefined;
}

export class AdapterStore {
  readonly limits: AdapterLimits;
  private readonly files: AdapterFiles;
  private readonly merges: MergedUnets;
  private readonly bases = new Map<string, Promise<BaseModel>>();

  constructor(
    adapterDir: string,
    private readonly baseModels: BaseModelPaths,
    /** Where merged UNets are opened (the pack's sessions: each merged UNet gets a worker of its own). */
    sessions: ModelSessions,
    cacheSize = 4,
    limits: Partial<AdapterLimits> = {},
    /** How long an evicted merged UNet must go unused before it is released, ms. */
    evictedIdleMs?: number,
  ) {
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...limits };
    this.files = new AdapterFiles(adapterDir, this.limits);
    const textEncoder = baseModels.textEncoder;
    this.merges = new MergedUnets(() => this.baseModel(baseModels.unet), textEncoder ? () => this.baseModel(textEncoder) : undefined, sessions, cacheSize, evictedIdleMs);
    // merged UNets run on worker threads of their own: start one now so the first adapter swap does not wait for it
    sessions.prewarm();
  }

  /** The adapters in the folder (valid files only, sorted by name). */
  list(): Promise<AdapterInfo[]> {
    return this.files.list();
  }

  /** Checks and stores an uploaded adapter. Nothing is written unless the file is valid for this UNet. */
  add(name: string, bytes: Uint8Array): Promise<AdapterInfo> {
    return this.files.add(name, bytes, (adapter) => this.checkFit(name, adapter));
  }

  /** A merged UNet if it is already built (for a swap at a frame boundary without waiting). */
  ready(adapters: readonly AdapterChoice[]): Promise<MergedUnet> | undefined {
    return this.merges.peek(adapterKey(adapters));
  }

  /**
   * The UNet with these adapters merged at these weights. Built in the background (the promise resolves when
   * the session is ready) and cached.
   */
  merged(adapters: readonly AdapterChoice[]): Promise<MergedUnet> {
    try {
      checkAdapterChoices(adapters, this.limits);
      const missing = adapters.find((a) => !this.files.has(a.name));
      if (missing) throw new ServiceError('not_found', `no adapter named ${missing.name}`, { field: 'adapters' });
    } catch (error) {
      return Promise.reject(error);
    }
    const active = adapters.filter((a) => a.weight !== 0);
    return this.merges.get(adapterKey(active), () => Promise.all(active.map(async (a) => ({ name: a.name, weight: a.weight, adapter: (await this.files.load(a.name)).adapter }))));
  }

  /** An upload must match nodes of the UNet, and bundled embeddings must have the text encoder's token width. */
  private async checkFit(name: string, adapter: KohyaAdapter): Promise<void> {
    const { index } = await this.baseModel(this.baseModels.unet);
    const { matched } = matchAdapter(index, adapter, `adapter ${name}`);
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet (e.g. ${adapter.layers[0]!.key})`);
    if (adapter.embeddings.length === 0 || !this.baseModels.textEncoder) return;
    const dim = tokenTable((await this.baseModel(this.baseModels.textEncoder)).index).dims[1];
    const wrong = adapter.embeddings.find((e) => e.dim !== dim);
    if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
  }

  /** A base model's bytes and graph index, read once. */
  private baseModel(path: string): Promise<BaseModel> {
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
}

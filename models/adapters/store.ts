/**
 * The adapter store a pack's engine talks to: the adapter folder (adapter-files.ts: listing and uploads,
 * checked against the pack's UNet and text encoders) and the merged UNets built from it (merged-unets.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { HiddenLayer } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { ModelSessions } from '../sessions.ts';
import { AdapterFiles, type AdapterInfo } from './adapter-files.ts';
import { adapterKey, checkAdapterChoices, DEFAULT_ADAPTER_LIMITS, type AdapterChoice, type AdapterLimits } from './choices.ts';
import { tokenTable } from './concept-tokens.ts';
import type { KohyaAdapter } from './kohya.ts';
import { matchAdapter } from './merge.ts';
import { MergedUnets, TOWER_TARGETS, type BaseModel, type MergedUnet } from './merged-unets.ts';
import { indexOnnxModel } from './onnx-graph.ts';

export type { AdapterInfo } from './adapter-files.ts';
export type { ConceptText, MergedUnet } from './merged-unets.ts';

/** A text encoder adapters may change, with the hidden state the pack reads from it. */
export interface TextEncoderPath {
  readonly path: string;
  readonly layer: HiddenLayer;
}

/**
 * The base models adapters apply to: the UNet, and the pack's text encoders in tower order (SDXL: text_encoder,
 * text_encoder_2) for text-encoder LoRA layers and concept tokens. `textEncoder` is the single-tower shorthand.
 */
export interface BaseModelPaths {
  readonly unet: string;
  readonly textEncoder?: string | undefined;
  readonly textEncoders?: readonly TextEncoderPath[] | undefined;
}

export class AdapterStore {
  readonly limits: AdapterLimits;
  private readonly files: AdapterFiles;
  private readonly merges: MergedUnets;
  private readonly bases = new Map<string, Promise<BaseModel>>();
  private readonly textEncoders: readonly TextEncoderPath[];

  constructor(
    adapterDir: string,
    private readonly baseModels: BaseModelPaths,
    /** Where merged UNets are opened (the pack's sessions: each merged UNet gets a worker of its own). */
    sessions: ModelSessions,
    cacheSize = 4,
    limits: Partial<AdapterLimits> = {},
    /** How long an evicted merged UNet must go unused before it is released, ms. */
    evictedIdleMs?: number,
    /** Weights the cached merged sessions may hold together (merged-unets.ts, DEFAULT_MERGED_BYTES). */
    maxMergedBytes?: number,
  ) {
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...limits };
    this.files = new AdapterFiles(adapterDir, this.limits);
    this.textEncoders = baseModels.textEncoders ?? (baseModels.textEncoder ? [{ path: baseModels.textEncoder, layer: 'last' }] : []);
    const towers = this.textEncoders.map((t) => ({ model: () => this.baseModel(t.path), layer: t.layer }));
    this.merges = new MergedUnets(() => this.baseModel(baseModels.unet), towers, sessions, cacheSize, evictedIdleMs, maxMergedBytes);
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

  /** Bytes of weights the cached merged UNets (and text encoders) hold. */
  get mergedBytes(): number {
    return this.merges.bytes;
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

  /** An upload must match nodes of the UNet or text encoders, and bundled embeddings must have the text encoder's token width. */
  private async checkFit(name: string, adapter: KohyaAdapter): Promise<void> {
    let matched = matchAdapter((await this.baseModel(this.baseModels.unet)).index, adapter, `adapter ${name}`).matched;
    for (const [i, te] of this.textEncoders.entries()) {
      matched += matchAdapter((await this.baseModel(te.path)).index, adapter, `adapter ${name}`, TOWER_TARGETS[i]).matched;
    }
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet or text encoders (e.g. ${adapter.layers[0]!.key})`);
    const first = this.textEncoders[0];
    if (adapter.embeddings.length === 0 || !first) return;
    const dim = tokenTable((await this.baseModel(first.path)).index).dims[1];
    const wrong = adapter.embeddings.find((e) => e.dim !== dim);
    if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
  }

  /** A base model's bytes, graph index and weight size (with its external data files), read once. */
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
}

/**
 * The adapter store a pack's engine talks to: the adapter folders (adapter-files.ts: the pack's own, read-only,
 * and uploads under the server's data directory), the checks an upload passes (format, fit to the UNet and text
 * encoders, update size: update-bounds.ts, and the merged UNet's probe: probe.ts), and the merged UNets built from
 * them (merged-unets.ts: leased, probed, at most maxVariants alive and bounded by the bytes of weights they hold).
 */
import { randomUUID } from 'node:crypto';
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
import { DEFAULT_MAX_VARIANTS, MergedUnets, TOWER_TARGETS, type BaseModel, type MergedLease, type MergedUnet, type ProbeBase } from './merged-unets.ts';
import { indexOnnxModel } from './onnx-graph.ts';
import { checkUpdateBounds } from './update-bounds.ts';

export type { AdapterInfo } from './adapter-files.ts';
export type { ConceptText, MergedLease, MergedUnet } from './merged-unets.ts';

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

export interface AdapterStoreSettings {
  /** Merged UNets alive at once (DEFAULT_MAX_VARIANTS). */
  readonly maxVariants: number;
  /** Weights live merged UNets may hold together before idle ones are evicted (merged-unets.ts, DEFAULT_MERGED_BYTES). */
  readonly maxMergedBytes: number | undefined;
  readonly limits: Partial<AdapterLimits>;
  /** Where uploads are stored (the server: <data-dir>/adapters/<pack>); none: uploads are refused. */
  readonly uploadDir: string | undefined;
  /** The base UNet merged ones are probed against (none: no probe). */
  readonly probe: ProbeBase | undefined;
  /** Start a worker thread now, so the first merge does not wait for one (default true; false when no adapter is expected soon). */
  readonly prewarm: boolean;
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
    settings: Partial<AdapterStoreSettings> = {},
  ) {
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...settings.limits };
    this.files = new AdapterFiles(adapterDir, this.limits, settings.uploadDir);
    this.textEncoders = baseModels.textEncoders ?? (baseModels.textEncoder ? [{ path: baseModels.textEncoder, layer: 'last' }] : []);
    const towers = this.textEncoders.map((t) => ({ model: () => this.baseModel(t.path), layer: t.layer }));
    this.merges = new MergedUnets(() => this.baseModel(baseModels.unet), towers, sessions, {
      maxVariants: settings.maxVariants ?? DEFAULT_MAX_VARIANTS,
      maxBytes: settings.maxMergedBytes,
      probe: settings.probe,
    });
    // merged UNets run on worker threads of their own: start one now so the first adapter swap does not wait for it
    if (settings.prewarm ?? true) sessions.prewarm();
  }

  /** Merged UNets alive (each a session on a worker thread, being built included), the bound, and adapter updates computed. */
  get stats(): { variants: number; maxVariants: number; deltasComputed: number } {
    return { variants: this.merges.live, maxVariants: this.merges.maxVariants, deltasComputed: this.merges.deltasComputed };
  }

  /** The adapters of the pack and the uploads (valid files only, sorted by name). */
  list(): Promise<AdapterInfo[]> {
    return this.files.list();
  }

  /**
   * Checks and stores an uploaded adapter: format, fit to the UNet, update size, and the merged UNet's probe.
   * Nothing is written unless all pass; an existing name is a conflict unless `replace`.
   */
  async add(name: string, bytes: Uint8Array, options: { replace?: boolean } = {}): Promise<AdapterInfo> {
    const info = await this.files.add(name, bytes, (adapter) => this.check(name, adapter), options);
    this.merges.forget(name); // variants merged from an earlier file of that name
    return info;
  }

  /** Bytes of weights the live merged UNets (and their text encoders) hold. */
  get mergedBytes(): number {
    return this.merges.bytes;
  }

  /** A merged UNet if it is already cached (for a swap at a frame boundary without waiting). */
  ready(adapters: readonly AdapterChoice[]): Promise<MergedUnet> | undefined {
    return this.merges.peek(adapterKey(adapters));
  }

  /**
   * A lease on the UNet with these adapters merged at these weights: built in the background (the promise
   * resolves when the session is ready and has passed the probe) and cached. Release it when done.
   */
  merged(adapters: readonly AdapterChoice[]): Promise<MergedLease> {
    try {
      checkAdapterChoices(adapters, this.limits);
      const missing = adapters.find((a) => !this.files.has(a.name));
      if (missing) throw new ServiceError('not_found', `no adapter named ${missing.name}`, { field: 'adapters' });
    } catch (error) {
      return Promise.reject(error);
    }
    const active = adapters.filter((a) => a.weight !== 0);
    return this.merges.acquire(adapterKey(active), () => Promise.all(active.map(async (a) => ({ name: a.name, weight: a.weight, adapter: (await this.files.load(a.name)).adapter }))));
  }

  /** Ends every merged UNet (their worker threads exit). */
  close(): Promise<void> {
    return this.merges.close();
  }

  /**
   * An upload must match nodes of the UNet or text encoders, keep its updates in bounds, bring embeddings of the
   * first text encoder's width, and pass the probe.
   */
  private async check(name: string, adapter: KohyaAdapter): Promise<void> {
    const unet = await this.baseModel(this.baseModels.unet);
    let matched = matchAdapter(unet.index, adapter, `adapter ${name}`).matched;
    checkUpdateBounds(unet.bytes, unet.index, adapter, `adapter ${name}`);
    for (const [i, te] of this.textEncoders.entries()) {
      const tower = await this.baseModel(te.path);
      const target = TOWER_TARGETS[i];
      matched += matchAdapter(tower.index, adapter, `adapter ${name}`, target).matched;
      checkUpdateBounds(tower.bytes, tower.index, adapter, `adapter ${name}`, target);
    }
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet or text encoders (e.g. ${adapter.layers[0]!.key})`);
    const first = this.textEncoders[0];
    if (adapter.embeddings.length > 0 && first) {
      const dim = tokenTable((await this.baseModel(first.path)).index).dims[1];
      const wrong = adapter.embeddings.find((e) => e.dim !== dim);
      if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
    }
    // merged alone at weight 1, built for this check only (the file is not stored yet)
    const lease = await this.merges.acquire(`upload-check-${randomUUID()}`, () => Promise.resolve([{ name, weight: 1, adapter }]), { cache: false });
    lease.release();
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

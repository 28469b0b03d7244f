/**
 * The adapter store a pack's engine talks to: the adapter folders (adapter-files.ts: the pack's own, read-only,
 * and uploads under the server's data directory), the checks an upload passes (format, fit to the UNet and text
 * encoder, update size: update-bounds.ts, and the merged UNet's probe: probe.ts), and the merged UNets built from
 * them (merged-unets.ts: leased, probed, at most maxVariants alive).
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ServiceError } from '../errors.ts';
import type { ModelSessions } from '../sessions.ts';
import { AdapterFiles, type AdapterInfo } from './adapter-files.ts';
import { adapterKey, checkAdapterChoices, DEFAULT_ADAPTER_LIMITS, type AdapterChoice, type AdapterLimits } from './choices.ts';
import { tokenTable } from './concept-tokens.ts';
import type { KohyaAdapter } from './kohya.ts';
import { matchAdapter } from './merge.ts';
import { DEFAULT_MAX_VARIANTS, MergedUnets, type BaseModel, type MergedLease, type MergedUnet, type ProbeBase } from './merged-unets.ts';
import { indexOnnxModel } from './onnx-graph.ts';
import { checkUpdateBounds } from './update-bounds.ts';

export type { AdapterInfo } from './adapter-files.ts';
export type { ConceptText, MergedLease, MergedUnet } from './merged-unets.ts';

/** The base models adapters apply to (the text encoder only for adapters with concept tokens). */
export interface BaseModelPaths {
  readonly unet: string;
  readonly textEncoder?: string | undefined;
}

export interface AdapterStoreSettings {
  /** Merged UNets alive at once (DEFAULT_MAX_VARIANTS). */
  readonly maxVariants: number;
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

  constructor(
    adapterDir: string,
    private readonly baseModels: BaseModelPaths,
    /** Where merged UNets are opened (the pack's sessions: each merged UNet gets a worker of its own). */
    sessions: ModelSessions,
    settings: Partial<AdapterStoreSettings> = {},
  ) {
    this.limits = { ...DEFAULT_ADAPTER_LIMITS, ...settings.limits };
    this.files = new AdapterFiles(adapterDir, this.limits, settings.uploadDir);
    const textEncoder = baseModels.textEncoder;
    this.merges = new MergedUnets(() => this.baseModel(baseModels.unet), textEncoder ? () => this.baseModel(textEncoder) : undefined, sessions, {
      maxVariants: settings.maxVariants ?? DEFAULT_MAX_VARIANTS,
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

  /** An upload must match nodes of the UNet, keep its updates in bounds, bring embeddings of the text encoder's width, and pass the probe. */
  private async check(name: string, adapter: KohyaAdapter): Promise<void> {
    const unet = await this.baseModel(this.baseModels.unet);
    const { matched } = matchAdapter(unet.index, adapter, `adapter ${name}`);
    if (matched === 0) throw new ServiceError('model_invalid', `adapter ${name}: none of its ${adapter.layers.length} keys matches a node of the UNet (e.g. ${adapter.layers[0]!.key})`);
    checkUpdateBounds(unet.bytes, unet.index, adapter, `adapter ${name}`);
    if (adapter.embeddings.length > 0 && this.baseModels.textEncoder) {
      const dim = tokenTable((await this.baseModel(this.baseModels.textEncoder)).index).dims[1];
      const wrong = adapter.embeddings.find((e) => e.dim !== dim);
      if (wrong) throw new ServiceError('model_invalid', `adapter ${name}: its embedding for "${wrong.word}" has ${wrong.dim} values per vector; the text encoder's tokens have ${dim}`);
    }
    // merged alone at weight 1, built for this check only (the file is not stored yet)
    const lease = await this.merges.acquire(`upload-check-${randomUUID()}`, () => Promise.resolve([{ name, weight: 1, adapter }]), { cache: false });
    lease.release();
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

/**
 * Merged UNets: built in the background, each on a worker thread of its own (models/sessions.ts openOwn:
 * building a session blocks its thread for hundreds of ms, so streams keep running on their current UNet until
 * the new one is ready), checked before use (each adapter's update size: update-bounds.ts; the merged UNet's
 * prediction: probe.ts), and bounded: at most `maxVariants` are alive at once, counting those being built and
 * those still held by a stream or render that an eviction took out of the cache.
 *
 * - Leases: acquire() hands out the UNet with a release(); a stream holds its lease while it uses the variant,
 *   a render until its response is sent. Concurrent acquires of one combination share one build.
 * - Cache: released variants stay cached (LRU) for the next request. A new combination that finds every slot
 *   taken evicts the least recently used idle one, whose session and thread end at once; when all are in use,
 *   it is refused (rate_limited, Retry-After) instead of growing memory and threads.
 * - Bytes: each merged variant is a full copy of the UNet (SD 1.5 fp32 3.4 GB, SDXL 10 GB), so a count alone
 *   would not bound memory. Past `maxBytes` of weights held by live variants, idle cached ones are evicted (least
 *   recently used first) once a build is done or a lease is given back; variants in use are never taken, and the
 *   most recently used always stays.
 * - Shared work: an adapter's update at weight 1 (the up @ down products) is kept in a byte-bounded LRU, so
 *   the same adapters at other weights only scale and add it.
 * A text encoder gets its own merged copy, on the same worker as the UNet (released with it), when the adapters
 * have LoRA layers for it (lora_te_, lora_te1_, lora_te2_) or bundle concept tokens (learned embeddings for their
 * trigger words). Weights stored as external data are read from the model's folder, which merged sessions also
 * get. Merging never writes to disk.
 */
import { dirname } from 'node:path';
import { ClipTextEncoder, Unet, type HiddenLayer } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { Model } from '../runtime/contract.ts';
import type { ModelSessions } from '../sessions.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import type { KohyaAdapter, LoraTarget } from './kohya.ts';
import { adapterDeltas, mergeAdapters, type AdapterDeltas, type WeightedAdapter } from './merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from './onnx-graph.ts';
import { checkProbe, probeInput, probePrediction, type ProbeInput } from './probe.ts';
import { checkUpdateBounds } from './update-bounds.ts';

/** Merged variants alive at once by default (a merged SD 1.5 UNet holds 3.4 GB of fp32 weights). */
export const DEFAULT_MAX_VARIANTS = 4;
/** Weights live merged variants may hold together before idle ones are evicted (the newest always stays). */
export const DEFAULT_MERGED_BYTES = 4 * 2 ** 30;
/** Bytes of per-adapter updates kept for merges at other weights (tiny-shapes' adapters: ~1 MB each). */
export const DELTA_CACHE_BYTES = 256 * 2 ** 20;
/** What a client refused for lack of a free variant should wait, s (a stream's swap or a render's time). */
const VARIANT_RETRY_S = 5;

/** A base model's file, bytes and graph index, read once, and the bytes of weights a session of it holds. */
export interface BaseModel {
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly index: OnnxGraphIndex;
  /** model.onnx and its external data files. */
  readonly weightBytes: number;
}

/** A text tower's encoder as the store gets it: its model and the hidden state the pack reads from it. */
export interface TextEncoderSource {
  readonly model: () => Promise<BaseModel>;
  readonly layer: HiddenLayer;
}

/** The LoRA target of each text tower (SDXL: text_encoder, text_encoder_2). */
export const TOWER_TARGETS: readonly LoraTarget[] = ['text_encoder', 'text_encoder_2'];

/** How prompts are encoded for a merged UNet whose adapters change a text encoder (LoRA layers or concept tokens). */
export interface ConceptText {
  /** Cache key of the adapter combination (prompt embeddings depend on it). */
  readonly key: string;
  /** Per text tower of the pack: its merged encoder, or undefined where the tower is unchanged. */
  readonly encoders: readonly (ClipTextEncoder | undefined)[];
  readonly tokens: ConceptTokenIds;
}

export interface MergedUnet {
  readonly unet: Unet;
  /** The sessions behind it (the UNet, and the text encoders beside it when the adapters change them), released together. */
  readonly models: readonly Model[];
  /** Present when the adapters change a text encoder. */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
  /** Weights the merged sessions hold (the byte bound counts these). */
  readonly weightBytes: number;
}

/** A merged UNet held by one user; release() (idempotent) gives it back. */
export interface MergedLease extends MergedUnet {
  release(): void;
}

/** The base UNet and a latent size to probe merged UNets against (none: merges are not probed). */
export interface ProbeBase {
  readonly unet: Unet;
  readonly latentHeight: number;
  readonly latentWidth: number;
}

export interface MergedUnetsSettings {
  readonly maxVariants: number;
  /** Weights live variants may hold together (DEFAULT_MERGED_BYTES). */
  readonly maxBytes?: number | undefined;
  readonly probe?: ProbeBase | undefined;
  readonly deltaCacheBytes?: number;
}

interface Entry {
  readonly key: string;
  readonly names: ReadonlySet<string>;
  readonly built: Promise<MergedUnet>;
  merged: MergedUnet | undefined;
  users: number;
  /** In the LRU cache; an entry out of it ends as soon as nobody uses it. */
  cached: boolean;
  released: boolean;
}

export class MergedUnets {
  /** Cached entries, least recently used first. */
  private readonly cache = new Map<string, Entry>();
  /** Every entry alive: cached, or evicted and still in use, or built for one use. */
  private readonly alive = new Set<Entry>();
  /** Per model the updates are for (the UNet, each text tower), per adapter. */
  private readonly deltas = new Map<LoraTarget, Map<KohyaAdapter, AdapterDeltas>>();
  private deltaBytes = 0;
  /** Adapter updates computed (a merge of cached adapters at new weights computes none). */
  deltasComputed = 0;
  private basePrediction: Promise<Float32Array> | undefined;
  /** Per model (the UNet, each text tower), adapters whose update sizes passed the bound (checked once per parsed file). */
  private readonly bounded = new Map<LoraTarget, WeakSet<KohyaAdapter>>();
  private probeRows: ProbeInput | undefined;
  private closed = false;
  readonly maxVariants: number;
  readonly maxBytes: number;

  constructor(
    private readonly unet: () => Promise<BaseModel>,
    /** The pack's text encoders in tower order; empty when not at hand (their LoRA layers and concept tokens are then ignored). */
    private readonly textEncoders: readonly TextEncoderSource[],
    /** Where merged UNets are opened (each on a worker of its own, when the sessions have workers). */
    private readonly sessions: ModelSessions,
    private readonly settings: MergedUnetsSettings,
  ) {
    const max = settings.maxVariants;
    if (!Number.isInteger(max) || max < 1) throw new ServiceError('bad_request', `the number of merged variants must be a positive integer, got ${max}`, { field: 'max-variants' });
    this.maxVariants = max;
    this.maxBytes = settings.maxBytes ?? DEFAULT_MERGED_BYTES;
  }

  /** Merged UNets alive (each a session on its own worker thread), being built included. */
  get live(): number {
    return this.alive.size;
  }

  /** Bytes of weights the live merged sessions hold (builds still running count once done). */
  get bytes(): number {
    let n = 0;
    for (const e of this.alive) n += e.merged?.weightBytes ?? 0;
    return n;
  }

  /** The merged UNet for `key` if it is cached (built or being built). */
  peek(key: string): Promise<MergedUnet> | undefined {
    return this.cache.get(key)?.built;
  }

  /**
   * A lease on the UNet with these adapters merged at these weights (zero weights already dropped): built once
   * per key and cached (`cache: false` builds one for this use only). Throws rate_limited when every variant
   * is in use.
   */
  acquire(key: string, adapters: () => Promise<readonly WeightedAdapter[]>, options: { cache?: boolean } = {}): Promise<MergedLease> {
    if (this.closed) return Promise.reject(new ServiceError('unavailable', 'the adapter store is closed'));
    const cache = options.cache ?? true;
    let entry = cache ? this.cache.get(key) : undefined;
    if (entry) {
      this.cache.delete(key); // refresh its place in the LRU order
      this.cache.set(key, entry);
    } else {
      try {
        this.makeRoom();
      } catch (error) {
        return Promise.reject(error);
      }
      entry = this.start(key, adapters, cache);
    }
    const taken = entry;
    taken.users++;
    return taken.built.then(
      (merged) => {
        let given = false;
        return {
          ...merged,
          release: () => {
            if (given) return;
            given = true;
            taken.users--;
            this.settle(taken);
          },
        };
      },
      (error: unknown) => {
        taken.users--;
        throw error;
      },
    );
  }

  /** Takes every cached variant with adapter `name` out of the cache (its file changed); idle ones end now. */
  forget(name: string): void {
    for (const entry of [...this.cache.values()]) {
      if (!entry.names.has(name)) continue;
      this.cache.delete(entry.key);
      entry.cached = false;
      this.settle(entry);
    }
  }

  /** Ends every variant (their dedicated worker threads exit); later acquires are refused. */
  async close(): Promise<void> {
    this.closed = true;
    this.cache.clear();
    await Promise.all([...this.alive].map((e) => this.end(e)));
  }

  private start(key: string, adapters: () => Promise<readonly WeightedAdapter[]>, cache: boolean): Entry {
    const names = new Set(key.split(',').filter(Boolean).map((part) => part.slice(0, part.lastIndexOf(':'))));
    const entry: Entry = { key, names, built: adapters().then((weighted) => this.build(weighted, key)), merged: undefined, users: 0, cached: cache, released: false };
    this.alive.add(entry);
    if (cache) this.cache.set(key, entry);
    entry.built.then(
      (merged) => {
        entry.merged = merged; // an entry ended while building is released by end(), which awaits the build
        if (!entry.released) this.evictBytes(entry);
      },
      () => {
        this.alive.delete(entry);
        if (this.cache.get(key) === entry) this.cache.delete(key);
      },
    );
    return entry;
  }

  /** Frees a slot for a new variant: ends the least recently used idle one, or refuses. */
  private makeRoom(): void {
    while (this.alive.size >= this.maxVariants) {
      const idle = [...this.cache.values()].find((e) => e.users === 0 && e.merged !== undefined);
      if (!idle) {
        const inUse = [...this.alive].map((e) => e.key || '(none)').join('; ');
        throw new ServiceError(
          'rate_limited',
          `all ${this.maxVariants} merged adapter variants are in use (${inUse}): try again when a stream or render using one ends, or ask for one of these`,
          { retryAfter: VARIANT_RETRY_S, field: 'adapters' },
        );
      }
      this.cache.delete(idle.key);
      idle.cached = false;
      void this.end(idle);
    }
  }

  /** Past the byte bound, ends idle cached variants, least recently used first (never `newest`, never one in use). */
  private evictBytes(newest: Entry | undefined): void {
    for (const e of [...this.cache.values()]) {
      if (this.bytes <= this.maxBytes) return;
      if (e === newest || e.users > 0 || e.merged === undefined) continue;
      this.cache.delete(e.key);
      e.cached = false;
      void this.end(e);
    }
  }

  /** An entry out of the cache ends when its last user lets go. */
  private settle(entry: Entry): void {
    if (!entry.cached && entry.users === 0) void this.end(entry);
    else if (entry.users === 0) this.evictBytes([...this.cache.values()].at(-1)); // an idle one may now go for bytes
  }

  private async end(entry: Entry): Promise<void> {
    if (entry.released) return;
    entry.released = true;
    this.alive.delete(entry);
    const merged = entry.merged ?? (await entry.built.catch(() => undefined));
    if (merged) await this.releaseModels(merged.models);
  }

  /** Releases a variant's sessions; a dedicated worker ends with its last session. */
  private async releaseModels(models: readonly Model[]): Promise<void> {
    await Promise.all(models.map((m) => this.sessions.release(m)));
  }

  /** An adapter's update at weight 1 to one model, shared by merges at other weights (LRU over all models, at most deltaCacheBytes). */
  private async deltasOf(index: OnnxGraphIndex, target: LoraTarget, weighted: WeightedAdapter): Promise<AdapterDeltas> {
    const table = this.deltas.get(target) ?? new Map<KohyaAdapter, AdapterDeltas>();
    this.deltas.set(target, table);
    const hit = table.get(weighted.adapter);
    if (hit) {
      table.delete(weighted.adapter); // refresh its place in the LRU order
      table.set(weighted.adapter, hit);
      return hit;
    }
    const computed = await adapterDeltas(index, weighted.adapter, `adapter ${weighted.name}`, target);
    this.deltasComputed++;
    const limit = this.settings.deltaCacheBytes ?? DELTA_CACHE_BYTES;
    if (computed.bytes <= limit && !table.has(weighted.adapter)) {
      table.set(weighted.adapter, computed);
      this.deltaBytes += computed.bytes;
      for (const t of this.deltas.values()) {
        for (const [adapter, d] of t) {
          if (this.deltaBytes <= limit) return computed;
          t.delete(adapter);
          this.deltaBytes -= d.bytes;
        }
      }
    }
    return computed;
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const unetBase = await this.unet();
    const unetDir = dirname(unetBase.path);
    const t0 = performance.now();
    if (weighted.length === 0) {
      const model = await this.sessions.openOwn(unetBase.bytes, 'unet', undefined, unetDir);
      return { unet: new Unet(model), models: [model], warnings: [], mergeMs: 0, buildMs: performance.now() - t0, weightBytes: unetBase.weightBytes };
    }
    // 1. UNet weights: W + sum_i lambda_i A_i B_i^T into a copy of the model bytes; files put in a folder by hand
    //    have not been through the upload checks, so the update bound is checked here too
    this.checkBounds(unetBase, 'unet', weighted);
    const merged = await mergeAdapters(unetBase.bytes, unetBase.index, weighted, 'unet', { externalDir: unetDir, deltasOf: (w) => this.deltasOf(unetBase.index, 'unet', w) });
    const warnings = [...merged.warnings];
    let weightBytes = unetBase.weightBytes;
    // 2. text encoders with LoRA layers; the first also with concept tokens (learned embeddings appended)
    const embeddings = weighted.flatMap((w) => w.adapter.embeddings.map((embedding) => ({ adapter: w.name, embedding })));
    const texts: { tower: number; bytes: Uint8Array; dir: string; layer: HiddenLayer; target: LoraTarget }[] = [];
    let tokens: ConceptTokenIds = new Map();
    for (const [tower, target] of TOWER_TARGETS.entries()) {
      const hasLayers = weighted.some((w) => w.adapter.layers.some((l) => l.target === target));
      const concepts = tower === 0 ? embeddings : [];
      if (!hasLayers && concepts.length === 0) continue;
      const source = this.textEncoders[tower];
      if (!source) {
        if (hasLayers) warnings.push(`no ${target} to merge the adapters' ${target} layers into: they were ignored`);
        if (concepts.length > 0) warnings.push(`no text encoder to add the concept tokens ${concepts.map((e) => e.embedding.word).join(', ')} to: their words are read as plain text`);
        continue;
      }
      const base = await source.model();
      let bytes = base.bytes;
      if (hasLayers) {
        this.checkBounds(base, target, weighted);
        const m = await mergeAdapters(base.bytes, base.index, weighted, target, { target, externalDir: dirname(base.path), deltasOf: (w) => this.deltasOf(base.index, target, w) });
        warnings.push(...m.warnings);
        bytes = m.bytes;
      }
      if (concepts.length > 0) {
        const added = addConceptTokens(bytes, bytes === base.bytes ? base.index : indexOnnxModel(bytes, target), concepts);
        bytes = added.bytes;
        tokens = added.ids;
      }
      weightBytes += base.weightBytes;
      texts.push({ tower, bytes, dir: dirname(base.path), layer: source.layer, target });
    }
    // 3. sessions on a worker thread of their own (the text encoders beside the UNet)
    const t1 = performance.now();
    const models: Model[] = [await this.sessions.openOwn(merged.bytes, `unet+${key}`, undefined, unetDir)];
    try {
      for (const t of texts) models.push(await this.sessions.openOwn(t.bytes, `${t.target}+${key}`, models[0], t.dir));
      const unet = new Unet(models[0]!);
      const buildMs = performance.now() - t1;
      // 4. the probe: a variant that breaks the model is never used
      await this.probe(unet, weighted.map((w) => `${w.name}:${w.weight}`).join(', '));
      const encoders: (ClipTextEncoder | undefined)[] = [];
      texts.forEach((t, i) => (encoders[t.tower] = new ClipTextEncoder(models[i + 1]!, t.layer)));
      const text = texts.length > 0 ? { key, encoders, tokens } : undefined;
      return { unet, models, text, warnings, mergeMs: t1 - t0, buildMs, weightBytes };
    } catch (error) {
      await this.releaseModels(models);
      throw error;
    }
  }

  /** The update bound (update-bounds.ts) for each adapter's layers of one model, once per parsed file. */
  private checkBounds(base: BaseModel, target: LoraTarget, weighted: readonly WeightedAdapter[]): void {
    const done = this.bounded.get(target) ?? new WeakSet<KohyaAdapter>();
    this.bounded.set(target, done);
    for (const w of weighted) {
      if (done.has(w.adapter)) continue;
      checkUpdateBounds(base.bytes, base.index, w.adapter, `adapter ${w.name}`, target);
      done.add(w.adapter);
    }
  }

  private async probe(unet: Unet, what: string): Promise<void> {
    const base = this.settings.probe;
    if (!base) return;
    this.probeRows ??= probeInput(base.unet, base.latentHeight, base.latentWidth);
    const input = this.probeRows;
    this.basePrediction ??= probePrediction(base.unet, input);
    const [merged, reference] = await Promise.all([probePrediction(unet, input), this.basePrediction]);
    checkProbe(merged, reference, `adapters ${what}`);
  }
}

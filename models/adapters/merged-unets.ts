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
 * - Shared work: an adapter's update at weight 1 (the up @ down products) is kept in a byte-bounded LRU, so
 *   the same adapters at other weights only scale and add it.
 * Adapters that bundle concept tokens also get a text encoder with those tokens added, on the same worker as
 * their UNet (released with it).
 * Merging never writes to disk.
 */
import { ClipTextEncoder, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { Model } from '../runtime/contract.ts';
import type { ModelSessions } from '../sessions.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import type { KohyaAdapter } from './kohya.ts';
import { adapterDeltas, mergeAdapters, type AdapterDeltas, type WeightedAdapter } from './merge.ts';
import type { OnnxGraphIndex } from './onnx-graph.ts';
import { checkProbe, probeInput, probePrediction, type ProbeInput } from './probe.ts';
import { checkUpdateBounds } from './update-bounds.ts';

/** Merged variants alive at once by default (a merged SD 1.5 UNet holds 3.4 GB of fp32 weights). */
export const DEFAULT_MAX_VARIANTS = 4;
/** Bytes of per-adapter updates kept for merges at other weights (tiny-shapes' adapters: ~1 MB each). */
export const DELTA_CACHE_BYTES = 256 * 2 ** 20;
/** What a client refused for lack of a free variant should wait, s (a stream's swap or a render's time). */
const VARIANT_RETRY_S = 5;

/** A base model's bytes and graph index, read once. */
export interface BaseModel {
  readonly bytes: Uint8Array;
  readonly index: OnnxGraphIndex;
}

/** How prompts are encoded for a merged UNet whose adapters bring concept tokens. */
export interface ConceptText {
  /** Cache key of the adapter combination (prompt embeddings depend on it). */
  readonly key: string;
  readonly encoder: ClipTextEncoder;
  readonly tokens: ConceptTokenIds;
}

export interface MergedUnet {
  readonly unet: Unet;
  /** The sessions behind it (the UNet, and the text encoder beside it when there are concept tokens), released together. */
  readonly models: readonly Model[];
  /** Present when the adapters bring concept tokens. */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
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
  private readonly deltas = new Map<KohyaAdapter, AdapterDeltas>();
  private deltaBytes = 0;
  /** Adapter updates computed (a merge of cached adapters at new weights computes none). */
  deltasComputed = 0;
  private basePrediction: Promise<Float32Array> | undefined;
  /** Adapters whose update sizes passed the bound (checked once per parsed file). */
  private readonly bounded = new WeakSet<KohyaAdapter>();
  private probeRows: ProbeInput | undefined;
  private closed = false;
  readonly maxVariants: number;

  constructor(
    private readonly unet: () => Promise<BaseModel>,
    /** Undefined when the pack's text encoder is not at hand: concept tokens are then read as plain text. */
    private readonly textEncoder: (() => Promise<BaseModel>) | undefined,
    /** Where merged UNets are opened (each on a worker of its own, when the sessions have workers). */
    private readonly sessions: ModelSessions,
    private readonly settings: MergedUnetsSettings,
  ) {
    const max = settings.maxVariants;
    if (!Number.isInteger(max) || max < 1) throw new ServiceError('bad_request', `the number of merged variants must be a positive integer, got ${max}`, { field: 'max-variants' });
    this.maxVariants = max;
  }

  /** Merged UNets alive (each a session on its own worker thread), being built included. */
  get live(): number {
    return this.alive.size;
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

  /** An entry out of the cache ends when its last user lets go. */
  private settle(entry: Entry): void {
    if (!entry.cached && entry.users === 0) void this.end(entry);
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

  /** An adapter's update at weight 1, shared by merges at other weights (LRU, at most deltaCacheBytes). */
  private async deltasOf(index: OnnxGraphIndex, weighted: WeightedAdapter): Promise<AdapterDeltas> {
    const hit = this.deltas.get(weighted.adapter);
    if (hit) {
      this.deltas.delete(weighted.adapter);
      this.deltas.set(weighted.adapter, hit);
      return hit;
    }
    const computed = await adapterDeltas(index, weighted.adapter, `adapter ${weighted.name}`);
    this.deltasComputed++;
    const limit = this.settings.deltaCacheBytes ?? DELTA_CACHE_BYTES;
    if (computed.bytes <= limit && !this.deltas.has(weighted.adapter)) {
      this.deltas.set(weighted.adapter, computed);
      this.deltaBytes += computed.bytes;
      for (const [adapter, d] of this.deltas) {
        if (this.deltaBytes <= limit) break;
        this.deltas.delete(adapter);
        this.deltaBytes -= d.bytes;
      }
    }
    return computed;
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const { bytes, index } = await this.unet();
    const t0 = performance.now();
    if (weighted.length === 0) {
      const model = await this.sessions.openOwn(bytes, 'unet');
      return { unet: new Unet(model), models: [model], warnings: [], mergeMs: 0, buildMs: performance.now() - t0 };
    }
    // 1. weights: W + sum_i lambda_i A_i B_i^T into a copy of the model bytes; files put in a folder by hand
    //    have not been through the upload checks, so the update bound is checked here too
    for (const w of weighted) {
      if (this.bounded.has(w.adapter)) continue;
      checkUpdateBounds(bytes, index, w.adapter, `adapter ${w.name}`);
      this.bounded.add(w.adapter);
    }
    const merged = await mergeAdapters(bytes, index, weighted, 'unet', (w) => this.deltasOf(index, w));
    const warnings = [...merged.warnings];
    // 2. concept tokens: a text encoder with the adapters' learned embeddings appended
    const embeddings = weighted.flatMap((w) => w.adapter.embeddings.map((embedding) => ({ adapter: w.name, embedding })));
    let text: { bytes: Uint8Array; ids: ConceptTokenIds } | undefined;
    if (embeddings.length > 0 && this.textEncoder) {
      const base = await this.textEncoder();
      text = addConceptTokens(base.bytes, base.index, embeddings);
    } else if (embeddings.length > 0) {
      warnings.push(`no text encoder to add the concept tokens ${embeddings.map((e) => e.embedding.word).join(', ')} to: their words are read as plain text`);
    }
    // 3. sessions on a worker thread of their own
    const t1 = performance.now();
    const models: Model[] = [await this.sessions.openOwn(merged.bytes, `unet+${key}`)];
    try {
      if (text) models.push(await this.sessions.openOwn(text.bytes, `text_encoder+${key}`, models[0]));
      const unet = new Unet(models[0]!);
      const buildMs = performance.now() - t1;
      // 4. the probe: a variant that breaks the model is never used
      await this.probe(unet, weighted.map((w) => `${w.name}:${w.weight}`).join(', '));
      const concept = text && { key, encoder: new ClipTextEncoder(models[1]!), tokens: text.ids };
      return { unet, models, text: concept, warnings, mergeMs: t1 - t0, buildMs };
    } catch (error) {
      await this.releaseModels(models);
      throw error;
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

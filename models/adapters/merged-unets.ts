/**
 * Merged UNets, built in the background on worker threads (threaded-unet.ts) and kept in a bounded LRU cache
 * keyed by the adapter combination. Concurrent requests for one combination share one build; an evicted UNet
 * is released once no stream has used it for EVICTED_IDLE_MS. Merging never writes to disk. Adapters that
 * bundle concept tokens (learned embeddings for their trigger words) also get a text encoder with those tokens
 * added, built on the same worker as the UNet.
 */
import type { ClipTextEncoder, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { DEFAULT_SESSION_OPTIONS, type SessionOptions } from '../runtime/onnx.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import { mergeAdapters, type WeightedAdapter } from './merge.ts';
import type { OnnxGraphIndex } from './onnx-graph.ts';
import { ThreadedUnet } from './threaded-unet.ts';

/** A merged UNet evicted from the cache is released after this long without a prediction (streams may still hold it). */
export const EVICTED_IDLE_MS = 60_000;

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
  /** Present when the adapters bring concept tokens. */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
}

export class MergedUnets {
  private readonly cache = new Map<string, Promise<MergedUnet>>();

  constructor(
    private readonly unet: () => Promise<BaseModel>,
    /** Undefined when the pack's text encoder is not at hand: concept tokens are then read as plain text. */
    private readonly textEncoder: (() => Promise<BaseModel>) | undefined,
    private readonly options: Pick<SessionOptions, 'provider' | 'threads'>,
    private readonly cacheSize: number,
  ) {
    if (!Number.isInteger(cacheSize) || cacheSize < 1) throw new ServiceError('bad_request', `adapter cache size must be a positive integer, got ${cacheSize}`);
  }

  /** The merged UNet for `key` if it is built or being built. */
  peek(key: string): Promise<MergedUnet> | undefined {
    return this.cache.get(key);
  }

  /**
   * The UNet with these adapters merged at these weights (zero weights already dropped), built once per key and
   * cached; the least recently used is evicted past the cache size.
   */
  get(key: string, adapters: () => Promise<readonly WeightedAdapter[]>): Promise<MergedUnet> {
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key); // refresh LRU order
      this.cache.set(key, hit);
      return hit;
    }
    const pending = adapters().then((weighted) => this.build(weighted, key));
    pending.catch(() => {
      if (this.cache.get(key) === pending) this.cache.delete(key);
    });
    this.cache.set(key, pending);
    while (this.cache.size > this.cacheSize) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      evicted.then((m) => (m.unet as ThreadedUnet).releaseWhenIdle(EVICTED_IDLE_MS), () => undefined);
    }
    return pending;
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const options = { ...DEFAULT_SESSION_OPTIONS, ...this.options };
    const { bytes, index } = await this.unet();
    const t0 = performance.now();
    if (weighted.length === 0) {
      const unet = await ThreadedUnet.load(bytes.slice(), { ...options, label: 'unet' });
      return { unet, warnings: [], mergeMs: 0, buildMs: performance.now() - t0 };
    }
    // 1. weights: W + sum_i lambda_i A_i B_i^T into a copy of the model bytes
    const merged = await mergeAdapters(bytes, index, weighted, 'unet');
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
    // 3. sessions on a worker thread
    const t1 = performance.now();
    const unet = await ThreadedUnet.load(merged.bytes, { ...options, label: `unet+${key}` }, text && { bytes: text.bytes, options: { ...options, label: `text_encoder+${key}` } });
    const concept = text && { key, encoder: unet.textEncoder!, tokens: text.ids };
    return { unet, text: concept, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1 };
  }
}

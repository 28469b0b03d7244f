/**
 * Merged UNets, built in the background on worker threads (threaded-unet.ts) and kept in an LRU cache keyed by
 * the adapter combination, bounded by the bytes of weights the merged sessions hold (and a count). Concurrent
 * requests for one combination share one build; an evicted UNet is released once no stream has used it for
 * EVICTED_IDLE_MS. Merging never writes to disk. A text encoder gets its own merged copy, built on the same worker
 * as the UNet, when the adapters have LoRA layers for it (lora_te_, lora_te1_, lora_te2_) or bundle concept tokens
 * (learned embeddings for their trigger words).
 */
import { dirname } from 'node:path';
import type { ClipTextEncoder, HiddenLayer, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { DEFAULT_SESSION_OPTIONS, type SessionOptions } from '../runtime/onnx.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import type { LoraTarget } from './kohya.ts';
import { mergeAdapters, type WeightedAdapter } from './merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from './onnx-graph.ts';
import { ThreadedUnet } from './threaded-unet.ts';

/** A merged UNet evicted from the cache is released after this long without a prediction (streams may still hold it). */
export const EVICTED_IDLE_MS = 60_000;
/**
 * Weights merged sessions may hold together before the least recently used is evicted (the newest always stays):
 * each merged variant is a full copy of the UNet (SD 1.5 fp32 3.4 GB, SDXL 10 GB), so a count alone would not
 * bound memory.
 */
export const DEFAULT_MERGED_BYTES = 4 * 2 ** 30;

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
  /** Present when the adapters change a text encoder. */
  readonly text?: ConceptText | undefined;
  readonly warnings: string[];
  /** Wall time of merging the weights and of building the session, ms (0 for the base UNet). */
  readonly mergeMs: number;
  readonly buildMs: number;
  /** Weights the merged sessions hold (the cache's byte bound counts these). */
  readonly weightBytes: number;
}

export class MergedUnets {
  private readonly cache = new Map<string, { merged: Promise<MergedUnet>; bytes: number }>();

  constructor(
    private readonly unet: () => Promise<BaseModel>,
    /** The pack's text encoders in tower order; empty when not at hand (their LoRA layers and concept tokens are then ignored). */
    private readonly textEncoders: readonly TextEncoderSource[],
    private readonly options: Pick<SessionOptions, 'provider' | 'threads'>,
    private readonly cacheSize: number,
    private readonly maxBytes = DEFAULT_MERGED_BYTES,
  ) {
    if (!Number.isInteger(cacheSize) || cacheSize < 1) throw new ServiceError('bad_request', `adapter cache size must be a positive integer, got ${cacheSize}`);
  }

  /** Bytes of weights the cached merged sessions hold (builds still running count once done). */
  get bytes(): number {
    return [...this.cache.values()].reduce((n, e) => n + e.bytes, 0);
  }

  /** The merged UNet for `key` if it is built or being built. */
  peek(key: string): Promise<MergedUnet> | undefined {
    return this.cache.get(key)?.merged;
  }

  /**
   * The UNet with these adapters merged at these weights (zero weights already dropped), built once per key and
   * cached; the least recently used is evicted past the cache size or the byte bound.
   */
  get(key: string, adapters: () => Promise<readonly WeightedAdapter[]>): Promise<MergedUnet> {
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key); // refresh LRU order
      this.cache.set(key, hit);
      return hit.merged;
    }
    const entry = { merged: adapters().then((weighted) => this.build(weighted, key)), bytes: 0 };
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
    while (this.cache.size > 1 && (this.cache.size > this.cacheSize || this.bytes > this.maxBytes)) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      evicted.merged.then((m) => (m.unet as ThreadedUnet).releaseWhenIdle(EVICTED_IDLE_MS), () => undefined);
    }
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const options = { ...DEFAULT_SESSION_OPTIONS, ...this.options };
    const unetBase = await this.unet();
    const unetOptions = { ...options, externalDataDir: dirname(unetBase.path) };
    const t0 = performance.now();
    if (weighted.length === 0) {
      const unet = await ThreadedUnet.load(unetBase.bytes.slice(), { ...unetOptions, label: 'unet' });
      return { unet, warnings: [], mergeMs: 0, buildMs: performance.now() - t0, weightBytes: unetBase.weightBytes };
    }
    // 1. UNet weights: W + sum_i lambda_i A_i B_i^T into a copy of the model bytes
    const merged = await mergeAdapters(unetBase.bytes, unetBase.index, weighted, 'unet', { externalDir: dirname(unetBase.path) });
    const warnings = [...merged.warnings];
    let weightBytes = unetBase.weightBytes;
    // 2. text encoders with LoRA layers; the first also with concept tokens (learned embeddings appended)
    const embeddings = weighted.flatMap((w) => w.adapter.embeddings.map((embedding) => ({ adapter: w.name, embedding })));
    const texts: { tower: number; bytes: Uint8Array; options: SessionOptions & { layer: HiddenLayer } }[] = [];
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
        const m = await mergeAdapters(base.bytes, base.index, weighted, target, { target, externalDir: dirname(base.path) });
        warnings.push(...m.warnings);
        bytes = m.bytes;
      }
      if (concepts.length > 0) {
        const added = addConceptTokens(bytes, bytes === base.bytes ? base.index : indexOnnxModel(bytes, target), concepts);
        bytes = added.bytes;
        tokens = added.ids;
      }
      weightBytes += base.weightBytes;
      texts.push({ tower, bytes, options: { ...options, label: `${target}+${key}`, externalDataDir: dirname(base.path), layer: source.layer } });
    }
    // 3. sessions on a worker thread
    const t1 = performance.now();
    const unet = await ThreadedUnet.load(merged.bytes, { ...unetOptions, label: `unet+${key}` }, texts.map((t) => ({ bytes: t.bytes, options: t.options })));
    const encoders: (ClipTextEncoder | undefined)[] = [];
    texts.forEach((t, i) => (encoders[t.tower] = unet.textEncoders[i]));
    const text = texts.length > 0 ? { key, encoders, tokens } : undefined;
    return { unet, text, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1, weightBytes };
  }
}

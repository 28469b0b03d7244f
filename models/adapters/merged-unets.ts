/**
 * Merged UNets, built in the background, each on a worker thread of its own (models/sessions.ts openOwn:
 * building a session blocks its thread for hundreds of ms, so streams keep running on their current UNet until
 * the new one is ready), and kept in an LRU cache keyed by the adapter combination, bounded by the bytes of
 * weights the merged sessions hold (and a count). Concurrent requests for one combination share one build; an
 * evicted UNet is released once no stream has used it for a while (EVICTED_IDLE_MS). Merging never writes to
 * disk. A text encoder gets its own merged copy, on the same worker as the UNet, when the adapters have LoRA
 * layers for it (lora_te_, lora_te1_, lora_te2_) or bundle concept tokens (learned embeddings for their trigger
 * words).
 */
import { dirname } from 'node:path';
import { ClipTextEncoder, Unet, type HiddenLayer } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { Feed, IoSpec, Model, Outputs, Rgb8Tensor } from '../runtime/contract.ts';
import type { ModelSessions } from '../sessions.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import type { LoraTarget } from './kohya.ts';
import { mergeAdapters, type WeightedAdapter } from './merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from './onnx-graph.ts';

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
    private readonly sessions: ModelSessions,
    private readonly cacheSize: number,
    /** How long an evicted UNet must go unused before it is released, ms. */
    private readonly evictedIdleMs = EVICTED_IDLE_MS,
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
      evicted.merged.then((m) => this.releaseWhenIdle(m), () => undefined);
    }
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const unetBase = await this.unet();
    const unetDir = dirname(unetBase.path);
    const t0 = performance.now();
    if (weighted.length === 0) {
      const model = await this.sessions.openOwn(unetBase.bytes, 'unet', undefined, unetDir);
      return { unet: new Unet(new UsedModel(model)), warnings: [], mergeMs: 0, buildMs: performance.now() - t0, weightBytes: unetBase.weightBytes };
    }
    // 1. UNet weights: W + sum_i lambda_i A_i B_i^T into a copy of the model bytes
    const merged = await mergeAdapters(unetBase.bytes, unetBase.index, weighted, 'unet', { externalDir: unetDir });
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
      texts.push({ tower, bytes, dir: dirname(base.path), layer: source.layer, target });
    }
    // 3. sessions on a worker thread of their own (the text encoders beside the UNet)
    const t1 = performance.now();
    const model = await this.sessions.openOwn(merged.bytes, `unet+${key}`, undefined, unetDir);
    const opened = await Promise.allSettled(texts.map((t) => this.sessions.openOwn(t.bytes, `${t.target}+${key}`, model, t.dir)));
    const textModels = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const failed = opened.find((o) => o.status === 'rejected');
    if (failed) {
      await Promise.all([model, ...textModels].map((m) => this.sessions.release(m)));
      throw failed.reason;
    }
    const used = new UsedModel(model, textModels);
    const encoders: (ClipTextEncoder | undefined)[] = [];
    texts.forEach((t, i) => (encoders[t.tower] = new ClipTextEncoder(new UsedModel(textModels[i]!, [], used), t.layer)));
    const text = texts.length > 0 ? { key, encoders, tokens } : undefined;
    return { unet: new Unet(used), text, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1, weightBytes };
  }

  /** Releases an evicted UNet (and its text encoder) once nothing has run on it for evictedIdleMs. */
  private releaseWhenIdle(merged: MergedUnet): void {
    const model = merged.unet.model as UsedModel;
    const check = () => {
      const idle = performance.now() - model.lastUsed;
      if (model.running === 0 && idle >= this.evictedIdleMs) void model.releaseAll(this.sessions);
      else setTimeout(check, Math.max(10, this.evictedIdleMs - idle)).unref();
    };
    setTimeout(check, this.evictedIdleMs).unref();
  }
}

/**
 * A model that remembers when it last ran and how many runs are on their way (a merged UNet and its text
 * encoder share one record: `of`), so an evicted one is released only once streams have stopped using it.
 */
class UsedModel implements Model {
  running = 0;
  lastUsed = performance.now();

  constructor(
    private readonly model: Model,
    /** Models released together with this one (the merged UNet's text encoders). */
    private readonly companions: readonly Model[] = [],
    /** The record to count runs in, when it is another model's (the text encoder counts in its UNet's). */
    private readonly of?: UsedModel,
  ) {}

  get inputs(): readonly IoSpec[] {
    return this.model.inputs;
  }

  get outputs(): readonly IoSpec[] {
    return this.model.outputs;
  }

  get label(): string {
    return this.model.label;
  }

  input(name: string): IoSpec | undefined {
    return this.model.input(name);
  }

  output(name: string): IoSpec | undefined {
    return this.model.output(name);
  }

  describeContract(): string {
    return this.model.describeContract();
  }

  run(feeds: Record<string, Feed>): Promise<Outputs> {
    return this.use(() => this.model.run(feeds));
  }

  runRgb8(feeds: Record<string, Feed>, output: string): Promise<Rgb8Tensor> {
    return this.use(() => this.model.runRgb8(feeds, output));
  }

  release(): Promise<void> {
    return this.model.release();
  }

  async releaseAll(sessions: ModelSessions): Promise<void> {
    await Promise.all([this.model, ...this.companions].map((m) => sessions.release(m)));
  }

  private async use<T>(run: () => Promise<T>): Promise<T> {
    const record = this.of ?? this;
    record.running++;
    record.lastUsed = performance.now();
    try {
      return await run();
    } finally {
      record.running--;
      record.lastUsed = performance.now();
    }
  }
}

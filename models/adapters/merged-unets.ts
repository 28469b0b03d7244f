/**
 * Merged UNets, built in the background, each on a worker thread of its own (models/sessions.ts openOwn:
 * building a session blocks its thread for hundreds of ms, so streams keep running on their current UNet until
 * the new one is ready), and kept in a bounded LRU cache keyed by the adapter combination. Concurrent requests
 * for one combination share one build; an evicted UNet is released once no stream has used it for a while
 * (EVICTED_IDLE_MS). Merging never writes to disk. Adapters that bundle concept tokens (learned embeddings for
 * their trigger words) also get a text encoder with those tokens added, on the same worker as the UNet.
 */
import { ClipTextEncoder, Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import type { Feed, IoSpec, Model, Outputs, Rgb8Tensor } from '../runtime/contract.ts';
import type { ModelSessions } from '../sessions.ts';
import { addConceptTokens, type ConceptTokenIds } from './concept-tokens.ts';
import { mergeAdapters, type WeightedAdapter } from './merge.ts';
import type { OnnxGraphIndex } from './onnx-graph.ts';

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
    private readonly sessions: ModelSessions,
    private readonly cacheSize: number,
    /** How long an evicted UNet must go unused before it is released, ms. */
    private readonly evictedIdleMs = EVICTED_IDLE_MS,
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
      evicted.then((m) => this.releaseWhenIdle(m), () => undefined);
    }
    return pending;
  }

  private async build(weighted: readonly WeightedAdapter[], key: string): Promise<MergedUnet> {
    const { bytes, index } = await this.unet();
    const t0 = performance.now();
    if (weighted.length === 0) {
      const model = await this.sessions.openOwn(bytes, 'unet');
      return { unet: new Unet(new UsedModel(model)), warnings: [], mergeMs: 0, buildMs: performance.now() - t0 };
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
    // 3. sessions on a worker thread of their own
    const t1 = performance.now();
    const model = await this.sessions.openOwn(merged.bytes, `unet+${key}`);
    const textModel = text && (await this.sessions.openOwn(text.bytes, `text_encoder+${key}`, model).catch(async (error: unknown) => {
      await this.sessions.release(model);
      throw error;
    }));
    const used = new UsedModel(model, textModel);
    const concept = text && textModel && { key, encoder: new ClipTextEncoder(new UsedModel(textModel, undefined, used)), tokens: text.ids };
    return { unet: new Unet(used), text: concept, warnings, mergeMs: t1 - t0, buildMs: performance.now() - t1 };
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
    /** A model released together with this one (the merged UNet's text encoder). */
    private readonly companion?: Model,
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
    await Promise.all([sessions.release(this.model), this.companion && sessions.release(this.companion)]);
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

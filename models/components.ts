/**
 * The networks of a Stable-Diffusion-family pack, each a thin wrapper that reads its tensor contract from the
 * session's metadata (REFERENCE §5) and never guesses: int32 or int64 ids; timestep int64 [B], float32 [] or
 * float32 [B]; float16 or float32 I/O; latent_sample or latent_parameters; SDXL's added conditions (text_embeds,
 * time_ids) and an LCM-distilled UNet's guidance embedding (timestep_cond) when the UNet has those inputs.
 */
import { ServiceError } from './errors.ts';
import type { DType, Feed, IoSpec, Model } from './runtime/contract.ts';
import { CLIP_CONTEXT_LENGTH } from './tokenizer.ts';

/** SD's latent channels, for an export whose channel dimension is symbolic in its metadata. */
const SD_LATENT_CHANNELS = 4;

function requireInput(model: Model, names: readonly string[]): IoSpec {
  const spec = names.map((n) => model.input(n)).find((s) => s !== undefined);
  if (!spec) throw new ServiceError('model_invalid', `${model.label}: no input named ${names.join(' or ')} (has ${model.describeContract()})`);
  return spec;
}

function requireOutput(model: Model, names: readonly string[]): IoSpec {
  const spec = names.map((n) => model.output(n)).find((s) => s !== undefined);
  if (!spec) {
    const has = model.outputs.map((o) => o.name).join(', ');
    throw new ServiceError('model_invalid', `${model.label}: no output named ${names.join(' or ')} (has ${has})`);
  }
  return spec;
}

export interface PromptEmbedding {
  /** The hidden states the UNet attends to, [77 * D] */
  readonly hidden: Float32Array;
  /** pooler_output or text_embeds, [P] (the router's input; SDXL's added condition); empty when the model has none */
  readonly pooled: Float32Array;
}

/** Which hidden state a text encoder gives the UNet: the last (SD 1.x/2.x) or the one before (SDXL, "clip skip 2"). */
export type HiddenLayer = 'last' | 'penultimate';

/** The output holding the hidden states of the layer before the last: hidden_states.<N - 1> of hidden_states.0 .. N. */
function penultimateOutput(model: Model): string {
  const layers = model.outputs.map((o) => /^hidden_states\.(\d+)$/.exec(o.name)?.[1]).filter((n): n is string => n !== undefined).map(Number);
  if (layers.length < 2) {
    throw new ServiceError('model_invalid', `${model.label}: SDXL reads the penultimate hidden state, but the model has no hidden_states.<n> outputs (export it with output_hidden_states, as optimum does)`);
  }
  return `hidden_states.${Math.max(...layers) - 1}`;
}

export class ClipTextEncoder {
  readonly idsType: DType;
  readonly hiddenName: string;
  readonly pooledName: string | undefined;

  constructor(
    readonly model: Model,
    readonly layer: HiddenLayer = 'last',
  ) {
    this.idsType = requireInput(model, ['input_ids']).dtype;
    this.hiddenName = layer === 'last' ? requireOutput(model, ['last_hidden_state']).name : penultimateOutput(model);
    this.pooledName = ['text_embeds', 'pooler_output'].find((n) => model.output(n) !== undefined);
  }

  /** Encodes token id rows ([B, 77] flattened). */
  async encode(ids: readonly Int32Array[]): Promise<PromptEmbedding[]> {
    const length = ids[0]?.length ?? 0;
    const flat = new Int32Array(ids.length * length);
    ids.forEach((r, i) => flat.set(r, i * length));
    const data = this.idsType === 'int64' ? BigInt64Array.from(flat, (v) => BigInt(v)) : flat;
    const out = await this.model.run({ input_ids: { data, dims: [ids.length, length] } });
    const hidden = out[this.hiddenName]!;
    const pooled = this.pooledName ? out[this.pooledName] : undefined;
    const hiddenSize = hidden.data.length / ids.length;
    const pooledSize = pooled ? pooled.data.length / ids.length : 0;
    return ids.map((_, i) => ({
      hidden: hidden.data.slice(i * hiddenSize, (i + 1) * hiddenSize),
      pooled: pooled ? pooled.data.slice(i * pooledSize, (i + 1) * pooledSize) : new Float32Array(0),
    }));
  }
}

/** One row of UNet work: a latent [4 * h * w], its timestep, and the prompt embedding [77 * D] it is conditioned on. */
export interface UnetRow {
  readonly sample: Float32Array;
  readonly timestep: number;
  readonly context: Float32Array;
  /** SDXL: the pooled prompt embedding (text_embeds, [P]); required by UNets with a text_embeds input. */
  readonly pooled?: Float32Array | undefined;
  /** SDXL micro-conditioning [original h, w, crop top, left, target h, w]; default: the render size, no crop. */
  readonly timeIds?: Float32Array | undefined;
  /** LCM-distilled UNets: the guidance scale w of the guidance embedding (timestep_cond). */
  readonly guidanceScale?: number | undefined;
}

/** Pixels per latent pixel: SD's VAE downsamples 8x (time_ids are in pixels). */
export const VAE_SCALE = 8;

/** diffusers' get_guidance_scale_embedding: sinusoids of 1000 (w - 1), [dim]. */
export function guidanceEmbedding(w: number, dim: number): Float32Array {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(dim);
  const scaled = (w - 1) * 1000;
  for (let i = 0; i < half; i++) {
    const arg = scaled * Math.exp((-Math.log(10000) * i) / (half - 1));
    out[i] = Math.sin(arg);
    out[half + i] = Math.cos(arg);
  }
  return out;
}

/** perRow: one timestep per batch row ([batch]); otherwise one for the call, a scalar [] or a fixed [1]. */
export type TimestepContract = { readonly dtype: 'int64' | 'float32' | 'float16'; readonly perRow: boolean };

export class Unet {
  readonly timestep: TimestepContract;
  readonly latentChannels: number;
  readonly outputName: string;
  /** Width of SDXL's text_embeds input (0: the UNet has no added conditions). */
  readonly pooledSize: number;
  /** Width of an LCM-distilled UNet's timestep_cond input (0: none). */
  readonly guidanceEmbeddingSize: number;
  /** Dims of a timestep shared by the call: [] (scalar) or [1]. */
  private readonly singleTimestepDims: readonly number[];
  private readonly contexts = new ContextCache();

  constructor(readonly model: Model) {
    requireInput(model, ['sample']);
    requireInput(model, ['encoder_hidden_states']);
    const t = requireInput(model, ['timestep']);
    if (t.dtype === 'int32') throw new ServiceError('unsupported', `${model.label}: int32 timestep is not a known export contract`);
    if (t.dims.length > 1) throw new ServiceError('unsupported', `${model.label}: timestep of rank ${t.dims.length} is not a known export contract`);
    const single = t.dims.length === 0 || t.dims[0] === 1; // a scalar, or a [1] some exporters fix
    this.timestep = { dtype: t.dtype, perRow: !single };
    this.singleTimestepDims = t.dims.length === 0 ? [] : [1];
    const channels = model.input('sample')!.dims[1];
    this.latentChannels = typeof channels === 'number' && channels > 0 ? channels : SD_LATENT_CHANNELS;
    this.outputName = requireOutput(model, ['out_sample']).name;
    const width = (name: string) => {
      const spec = model.input(name);
      if (!spec) return 0;
      const d = spec.dims[1];
      if (typeof d !== 'number' || d <= 0) throw new ServiceError('unsupported', `${model.label}: ${name} needs a fixed width, got [${spec.dims.join(', ')}]`);
      return d;
    };
    this.pooledSize = width('text_embeds');
    this.guidanceEmbeddingSize = width('timestep_cond');
    if (this.pooledSize > 0) requireInput(model, ['time_ids']);
  }

  /**
   * Predicts noise for every row. A UNet whose timestep is a scalar cannot mix timesteps in one batch, so its
   * rows are grouped by timestep and run group by group (same results, more calls).
   */
  async predict(rows: readonly UnetRow[], latentHeight: number, latentWidth: number): Promise<Float32Array[]> {
    if (rows.length === 0) return [];
    const groups = this.timestep.perRow ? [rows.map((_, i) => i)] : groupByTimestep(rows);
    const out: Float32Array[] = new Array(rows.length);
    for (const group of groups) {
      const predictions = await this.run(group.map((i) => rows[i]!), latentHeight, latentWidth);
      group.forEach((rowIndex, k) => (out[rowIndex] = predictions[k]!));
    }
    return out;
  }

  private async run(rows: readonly UnetRow[], h: number, w: number): Promise<Float32Array[]> {
    const b = rows.length;
    const latentSize = this.latentChannels * h * w;
    const contextSize = rows[0]!.context.length;
    const sample = new Float32Array(b * latentSize); // [B, 4, h, w]
    rows.forEach((r, i) => {
      if (r.sample.length !== latentSize) throw new Error(`UNet row ${i} has ${r.sample.length} latent values, expected ${latentSize}`);
      if (r.context.length !== contextSize) throw new Error(`UNet row ${i} has a prompt embedding of another size`);
      sample.set(r.sample, i * latentSize);
    });
    const hiddenSize = this.model.input('encoder_hidden_states')!.dims[2];
    const d = typeof hiddenSize === 'number' && hiddenSize > 0 ? hiddenSize : contextSize / CLIP_CONTEXT_LENGTH;
    const steps = this.timestep.perRow ? rows.map((r) => r.timestep) : [rows[0]!.timestep];
    const dims = this.timestep.perRow ? [b] : this.singleTimestepDims;
    const timestep = this.timestep.dtype === 'int64' ? { data: BigInt64Array.from(steps, (t) => BigInt(Math.round(t))), dims } : { data: Float32Array.from(steps), dims };
    const feeds: Record<string, Feed> = {
      sample: { data: sample, dims: [b, this.latentChannels, h, w], transfer: true },
      timestep,
      encoder_hidden_states: { ...this.contexts.get(rows.map((r) => r.context)), dims: [b, contextSize / d, d] },
    };
    if (this.pooledSize > 0) Object.assign(feeds, addedConditionsOf(this, rows, h, w));
    if (this.guidanceEmbeddingSize > 0) {
      const cond = new Float32Array(b * this.guidanceEmbeddingSize); // [B, time_cond_proj_dim]
      rows.forEach((r, i) => cond.set(guidanceEmbedding(r.guidanceScale ?? 1, this.guidanceEmbeddingSize), i * this.guidanceEmbeddingSize));
      feeds['timestep_cond'] = { data: cond, dims: [b, this.guidanceEmbeddingSize] };
    }
    const out = await this.model.run(feeds);
    const eps = out[this.outputName]!.data;
    return rows.map((_, i) => eps.subarray(i * latentSize, (i + 1) * latentSize));
  }
}

/** An id per prompt embedding array (embeddings are never changed after they are made). */
const embeddingIds = new WeakMap<Float32Array, number>();
let nextEmbeddingId = 1;

function embeddingId(e: Float32Array): number {
  let id = embeddingIds.get(e);
  if (id === undefined) embeddingIds.set(e, (id = nextEmbeddingId++));
  return id;
}

/** Batched prompt contexts [B, 77, D] built once per combination of embeddings. */
const CONTEXT_CACHE_SIZE = 32;

/**
 * The UNet's encoder_hidden_states for a list of rows' embeddings: concatenated once and kept (a stream sends the
 * same [cond ; cond] every frame), and marked `keep` so a worker holds its copy and later calls send only the key.
 */
class ContextCache {
  private readonly cache = new Map<string, { data: Float32Array; keep: string }>();

  get(contexts: readonly Float32Array[]): Pick<Feed, 'data' | 'keep'> {
    const keep = `context:${contexts.map(embeddingId).join(',')}`;
    let hit = this.cache.get(keep);
    if (hit) this.cache.delete(keep);
    else {
      const size = contexts[0]!.length;
      const data = new Float32Array(contexts.length * size);
      contexts.forEach((c, i) => data.set(c, i * size));
      hit = { data, keep };
      if (this.cache.size >= CONTEXT_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(keep, hit);
    return hit;
  }
}

/** SDXL's text_embeds [B, P] and time_ids [B, 6] for rows of latents h x w. */
function addedConditionsOf(unet: Unet, rows: readonly UnetRow[], h: number, w: number): Record<string, Feed> {
  const b = rows.length;
  const p = unet.pooledSize;
  const pooled = new Float32Array(b * p);
  const timeIds = new Float32Array(b * 6);
  const size = Float32Array.of(h * VAE_SCALE, w * VAE_SCALE, 0, 0, h * VAE_SCALE, w * VAE_SCALE);
  rows.forEach((r, i) => {
    if (r.pooled?.length !== p) throw new ServiceError('inference_failed', `${unet.model.label}: row ${i} has ${r.pooled?.length ?? 0} pooled values for text_embeds, the UNet takes ${p}`);
    pooled.set(r.pooled, i * p);
    timeIds.set(r.timeIds ?? size, i * 6);
  });
  return { text_embeds: { data: pooled, dims: [b, p] }, time_ids: { data: timeIds, dims: [b, 6] } };
}

function groupByTimestep(rows: readonly UnetRow[]): number[][] {
  const groups = new Map<number, number[]>();
  rows.forEach((r, i) => groups.set(r.timestep, [...(groups.get(r.timestep) ?? []), i]));
  return [...groups.values()];
}

/**
 * An image for a VAE encoder: planar floats [3, H, W] in [-1, 1], or interleaved RGB bytes [H, W, 3] (a
 * decoded frame as it comes from the codec; converted where the session runs, see models/runtime/image-layout.ts).
 */
export type ImageInput = Float32Array | Uint8Array;

/** Image -> latent [4, H/8, W/8], multiplied by the scaling factor. */
export class VaeEncoder {
  readonly outputName: string;
  /** latent_parameters holds mean and logvar; the mean (first half of the channels) is used. */
  readonly outputsParameters: boolean;

  constructor(
    readonly model: Model,
    readonly scalingFactor: number,
  ) {
    requireInput(model, ['sample']);
    const out = requireOutput(model, ['latent_sample', 'latent_parameters', 'latent', 'latents']);
    this.outputName = out.name;
    this.outputsParameters = out.name === 'latent_parameters';
  }

  /**
   * Encodes images of one kind (all floats or all bytes). `handOver`: the caller is done with the images, so a
   * single byte image goes to the session's thread without a copy.
   */
  async encode(images: readonly ImageInput[], height: number, width: number, handOver = false): Promise<Float32Array[]> {
    const out = (await this.model.run({ sample: imageFeed(images, height, width, handOver) }))[this.outputName]!;
    const perImage = out.data.length / images.length;
    const keep = this.outputsParameters ? perImage / 2 : perImage; // [mean ; logvar] per image
    return images.map((_, i) => {
      const latent = out.data.slice(i * perImage, i * perImage + keep);
      for (let j = 0; j < latent.length; j++) latent[j]! *= this.scalingFactor;
      return latent;
    });
  }
}

/** The encoder's feed: [B, 3, H, W] floats, or [B, H, W, 3] bytes for the session's thread to convert. */
function imageFeed(images: readonly ImageInput[], height: number, width: number, handOver: boolean): Feed {
  const bytes = images.every((img) => img instanceof Uint8Array);
  if (!bytes && images.some((img) => img instanceof Uint8Array)) throw new Error('images to encode must be all floats or all RGB bytes');
  const size = 3 * height * width;
  const only = images[0];
  // a whole ArrayBuffer of its own can be moved to the worker as it is
  const movable = handOver && images.length === 1 && only !== undefined && only.byteOffset === 0 && only.byteLength === only.buffer.byteLength;
  const data = movable ? only : bytes ? new Uint8Array(images.length * size) : new Float32Array(images.length * size);
  if (!movable) images.forEach((img, i) => data.set(img, i * size));
  return bytes ? { data, dims: [images.length, height, width, 3], layout: 'rgb8', transfer: true } : { data, dims: [images.length, 3, height, width], transfer: true };
}

/** Latent [4, h, w] (scaled) -> image [3, 8h, 8w] in [-1, 1], or RGB bytes [8h, 8w, 3]. */
export class VaeDecoder {
  readonly outputName: string;
  readonly latentChannels: number;

  constructor(
    readonly model: Model,
    readonly scalingFactor: number,
  ) {
    requireInput(model, ['latent_sample', 'latent', 'latents']);
    this.outputName = requireOutput(model, ['sample', 'image']).name;
    const channels = model.inputs[0]!.dims[1];
    this.latentChannels = typeof channels === 'number' && channels > 0 ? channels : SD_LATENT_CHANNELS;
  }

  async decode(latents: readonly Float32Array[], latentHeight: number, latentWidth: number): Promise<{ images: Float32Array[]; height: number; width: number }> {
    const out = (await this.model.run(this.feeds(latents, latentHeight, latentWidth)))[this.outputName]!;
    const [, , height, width] = out.dims as [number, number, number, number];
    const perImage = out.data.length / latents.length;
    return { images: latents.map((_, i) => out.data.subarray(i * perImage, (i + 1) * perImage)), height, width };
  }

  /** Decodes straight to RGB bytes [H, W, 3] per image (clamped and rounded as encodeImage would). */
  async decodeRgb8(latents: readonly Float32Array[], latentHeight: number, latentWidth: number): Promise<{ images: Uint8Array[]; height: number; width: number }> {
    const out = await this.model.runRgb8(this.feeds(latents, latentHeight, latentWidth), this.outputName);
    const [, height, width] = out.dims as [number, number, number, number];
    const perImage = out.data.length / latents.length;
    return { images: latents.map((_, i) => out.data.subarray(i * perImage, (i + 1) * perImage)), height, width };
  }

  private feeds(latents: readonly Float32Array[], latentHeight: number, latentWidth: number): Record<string, Feed> {
    const size = this.latentChannels * latentHeight * latentWidth;
    const batch = new Float32Array(latents.length * size);
    latents.forEach((l, i) => {
      for (let j = 0; j < size; j++) batch[i * size + j] = l[j]! / this.scalingFactor;
    });
    const inputName = this.model.inputs[0]!.name;
    return { [inputName]: { data: batch, dims: [latents.length, this.latentChannels, latentHeight, latentWidth], transfer: true } };
  }
}

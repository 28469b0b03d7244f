/**
 * The engine: one loaded pack and what every flow shares: the scheduler, prompt embeddings (cached),
 * image <-> latent conversion and the UNet runner. Streams and batch renders are built on top of it.
 */
import type { PromptEmbedding } from '../models/components.ts';
import type { EncodedText, PromptEncoder } from '../models/prompt-encoder.ts';
import { ServiceError } from '../models/errors.ts';
import type { ImageInput } from '../models/components.ts';
import { loadPack, EMBEDDED_PACK_DIR, DEFAULT_PACK_OPTIONS, type ModelPack, type PackOptions, type Vae } from '../models/pack.ts';
import { loadExperts } from '../models/aptp/experts.ts';
import { AdapterStore, type ConceptText } from '../models/adapters/store.ts';
import { exists } from '../models/files.ts';
import { join } from 'node:path';
import { blend, blendedNoise } from './blending.ts';
import type { NoiseTable, PromptContext, UnetRunner } from './denoise-step.ts';
import { MAX_SIDE, type GenerationParams } from './params.ts';
import { otherSide, sizeForAspect } from './aspect.ts';
import { LcmScheduler, parseSchedulerConfig, tIndexListForStrength, type StepCoefficients } from './schedulers/lcm.ts';
import { VariantResolver, type AdapterSource, type ExpertSource, type UnetVariant } from './variants.ts';

/** Default strength for img2img and streams when neither strength nor t_index_list is given. */
export const DEFAULT_IMG2IMG_STRENGTH = 0.5;
/** Prompt embeddings kept in memory (a few MB for SD's 77 x 1024 floats). */
const EMBEDDING_CACHE_SIZE = 256;

export interface Size {
  readonly width: number;
  readonly height: number;
  readonly latentWidth: number;
  readonly latentHeight: number;
}

/** Which of a pack's VAEs turns images into latents and back: the full one, or the tiny one (taesd_*). */
export type VaeChoice = 'full' | 'tiny';

/** A prompt context plus the pooled text embedding the expert router reads, and what the caller should know. */
export interface EncodedPrompt extends PromptContext {
  readonly pooled: Float32Array;
  /** E.g. a prompt longer than the text encoder's 77-token window (the rest is not read). */
  readonly warnings: readonly string[];
}

/** A warning for a prompt the 77-token window cut, or undefined. */
function truncation(field: string, e: EncodedText): string | undefined {
  if (e.tokens <= e.kept) return undefined;
  return `${field} is ${e.tokens} tokens long; the text encoder reads the first ${e.kept} (CLIP's 77-token window with BOS and EOS), the last ${e.tokens - e.kept} are ignored`;
}

export class Engine {
  readonly scheduler: LcmScheduler;
  /** Picks the UNet (pack, expert, merged adapters) for each request. */
  variants: VariantResolver;
  private readonly embeddings = new Map<string, { encoded: Promise<EncodedText>; embedding: Promise<PromptEmbedding> }>();

  constructor(readonly pack: ModelPack) {
    this.scheduler = new LcmScheduler(parseSchedulerConfig(pack.schedulerConfig));
    this.variants = new VariantResolver(pack.unet, undefined, undefined);
  }

  /** Attaches APTP experts and/or an adapter store (loaded by their own modules). */
  attach(sources: { experts?: ExpertSource | undefined; adapters?: AdapterSource | undefined }): void {
    this.variants = new VariantResolver(this.pack.unet, sources.experts ?? this.variants.experts, sources.adapters ?? this.variants.adapters);
  }

  /** Loads a pack with its APTP experts (experts/) and adapter store (adapters/) when it has them. */
  static async load(dir: string = EMBEDDED_PACK_DIR, options: PackOptions = DEFAULT_PACK_OPTIONS): Promise<Engine> {
    const pack = await loadPack(dir, options);
    const engine = new Engine(pack);
    const adapterDir = join(pack.dir, 'adapters');
    engine.attach({
      experts: await loadExperts(pack),
      adapters: (await exists(adapterDir))
        ? new AdapterStore(adapterDir, { unet: join(pack.dir, 'unet', 'model.onnx'), textEncoders: pack.kind.towers.map((t) => ({ path: join(pack.dir, t.encoder, 'model.onnx'), layer: t.layer })) }, pack.sessions)
        : undefined,
    });
    return engine;
  }

  get latentChannels(): number {
    return this.pack.unet.latentChannels;
  }

  /** Most pixels a frame gets when its size follows an aspect: the model's training size squared. */
  get pixelBudget(): number {
    return this.pack.defaultImageSize ** 2;
  }

  /**
   * The frame size for these parameters: width and height as given; a missing side from the aspect (the
   * parameters', else `inputAspect`, the shape of the input frames); neither side: the largest size with that
   * aspect within the pixel budget (pipelines/aspect.ts); no aspect at all: the model's square default.
   */
  size(params: Pick<GenerationParams, 'width' | 'height'> & { aspect?: number | undefined }, inputAspect?: number): Size {
    const m = this.pack.sizeMultiple;
    const aspect = params.aspect ?? inputAspect;
    let { width, height } = params;
    if (aspect !== undefined && width === undefined && height === undefined) {
      ({ width, height } = sizeForAspect(aspect, { pixels: this.pixelBudget, multiple: m, maxSide: MAX_SIDE }));
    } else if (aspect !== undefined && (width === undefined) !== (height === undefined)) {
      if (width !== undefined) height = otherSide(width, aspect, m, MAX_SIDE, 'width');
      else width = otherSide(height!, aspect, m, MAX_SIDE, 'height');
    }
    width ??= this.pack.defaultImageSize;
    height ??= this.pack.defaultImageSize;
    for (const [field, value] of [['width', width], ['height', height]] as const) {
      if (value % m !== 0) throw new ServiceError('bad_request', `${field} must be a multiple of ${m} for model ${this.pack.name}, got ${value}`, { field });
    }
    const s = this.pack.vaeScale;
    return { width, height, latentWidth: width / s, latentHeight: height / s };
  }

  latentSize(size: Size): number {
    return this.latentChannels * size.latentHeight * size.latentWidth;
  }

  /** Step coefficients: raw t_index_list, else steps spread from the strength (1 for txt2img). */
  coefficients(params: GenerationParams, mode: 'txt2img' | 'img2img'): StepCoefficients {
    const grid = this.scheduler.grid.length;
    const list =
      params.t_index_list ??
      tIndexListForStrength(mode === 'txt2img' ? 1 : (params.strength ?? DEFAULT_IMG2IMG_STRENGTH), params.steps, grid);
    return this.scheduler.coefficients(list);
  }

  /**
   * Text embedding of one prompt, cached (a stream that switches back and forth costs nothing). With `concept`
   * (adapters that bring concept tokens) their words map to the added tokens of that text encoder.
   */
  embed(text: string, concept?: ConceptText): Promise<PromptEmbedding> {
    return this.cached(text, concept).embedding;
  }

  /** embed() with the token count. */
  private encodeText(text: string, concept?: ConceptText): Promise<EncodedText> {
    return this.cached(text, concept).encoded;
  }

  private cached(text: string, concept?: ConceptText): { encoded: Promise<EncodedText>; embedding: Promise<PromptEmbedding> } {
    const key = concept ? `${concept.key}\u0000${text}` : text;
    const hit = this.embeddings.get(key);
    if (hit) {
      this.embeddings.delete(key); // refresh its place in the LRU order
      this.embeddings.set(key, hit);
      return hit;
    }
    const encoded = this.promptsFor(concept).encode(text, concept?.tokens);
    const entry = { encoded, embedding: encoded.then((e) => e.embedding) };
    entry.embedding.catch(() => this.embeddings.delete(key));
    this.embeddings.set(key, entry);
    if (this.embeddings.size > EMBEDDING_CACHE_SIZE) this.embeddings.delete(this.embeddings.keys().next().value!);
    return entry;
  }

  /** The pack's prompt encoder, with the merged text encoders of an adapter combination in place of its own. */
  private promptsFor(concept?: ConceptText): PromptEncoder {
    return concept ? this.pack.prompts.withEncoders(concept.encoders) : this.pack.prompts;
  }

  /** Conditional (possibly blended) and unconditional embeddings for the parameters. */
  async encodePrompt(params: Pick<GenerationParams, 'prompt' | 'prompt_blend' | 'negative_prompt'> & Partial<Pick<GenerationParams, 'guidance_scale'>>, concept?: ConceptText): Promise<EncodedPrompt> {
    const parts = typeof params.prompt === 'string' ? [{ text: params.prompt, weight: 1 }] : params.prompt;
    if (parts.every((p) => p.weight === 0)) throw new ServiceError('bad_request', 'prompt weights must not all be 0', { field: 'prompt' });
    const embed = (text: string) => this.encodeText(text, concept);
    const [encoded, negative] = await Promise.all([Promise.all(parts.map((p) => embed(p.text))), embed(params.negative_prompt)]);
    const weighted = (pick: (e: EncodedText) => Float32Array) => encoded.map((e, i) => ({ value: pick(e), weight: parts[i]!.weight }));
    // SDXL (force_zeros_for_empty_prompt): no negative prompt means zeros, not "" encoded
    const prompts = this.promptsFor(concept);
    const uncond = params.negative_prompt === '' && prompts.zeroEmptyNegative ? prompts.zerosLike(negative.embedding) : negative.embedding;
    const warnings = [
      ...encoded.map((e, i) => truncation(parts.length > 1 ? `prompt[${i}]` : 'prompt', e)),
      truncation('negative_prompt', negative),
    ].filter((w): w is string => w !== undefined);
    return {
      cond: blend(weighted((e) => e.embedding.hidden), params.prompt_blend),
      pooled: blend(weighted((e) => e.embedding.pooled), 'linear'),
      uncond: uncond.hidden,
      uncondPooled: uncond.pooled,
      ...(this.pack.unet.guidanceEmbeddingSize > 0 ? { guidanceScale: params.guidance_scale } : {}),
      warnings,
    };
  }

  /**
   * The prompt embeddings and the UNet variant for a request. Adapters come first: concept tokens they bring
   * change how the prompt is encoded; without adapters the router reads the encoded prompt.
   */
  async prepare(params: GenerationParams): Promise<{ prompt: EncodedPrompt; variant: UnetVariant & { warnings: string[] } }> {
    let prompt: EncodedPrompt | undefined;
    const encoded = async () => (prompt ??= await this.encodePrompt(params)).pooled;
    const variant = await this.variants.resolve(params, encoded);
    if (variant.text || !prompt) prompt = await this.encodePrompt(params, variant.text);
    return { prompt, variant };
  }

  /**
   * Initial noise for `lanes` parallel latents through `steps` steps. With perLaneSeed, lane j is drawn from
   * seed + j (a batch of N images = N single renders with consecutive seeds, as A1111 does); otherwise all
   * rows come from the one seed in order (StreamDiffusion's randn(batch)).
   */
  noise(params: Pick<GenerationParams, 'seed'>, steps: number, lanes: number, size: Size, perLaneSeed: boolean): NoiseTable {
    const seeds = typeof params.seed === 'number' ? [{ seed: params.seed, weight: 1 }] : params.seed;
    const latent = this.latentSize(size);
    const table = (offset: number, count: number) => blendedNoise(seeds.map((s) => ({ value: (s.seed + offset) % 2 ** 32, weight: s.weight })), count, latent);
    if (!perLaneSeed) return { rows: table(0, steps * lanes), lanes };
    const perLane = Array.from({ length: lanes }, (_, j) => table(j, steps));
    // rows are step-major: row (k, j) = perLane[j][k]
    const rows = Array.from({ length: steps * lanes }, (_, r) => perLane[r % lanes]![Math.floor(r / lanes)]!);
    return { rows, lanes };
  }

  /** A direct UNet runner for latents of this size (the server wraps variants to batch across streams). */
  unetRunner(size: Size, variant?: UnetVariant): UnetRunner {
    const unet = variant?.unet ?? this.pack.unet;
    return (rows) => unet.predict(rows, size.latentHeight, size.latentWidth);
  }

  /**
   * The VAE to use. An explicit choice of the tiny VAE on a pack without one is a bad request; a default choice
   * (the live default) falls back to the full VAE.
   */
  vae(choice: VaeChoice, explicit: boolean): { name: VaeChoice; vae: Vae } {
    const tiny = this.pack.tinyVae;
    if (choice === 'tiny' && tiny) return { name: 'tiny', vae: tiny };
    if (choice === 'tiny' && explicit) throw new ServiceError('bad_request', `vae: model ${this.pack.name} has no tiny VAE (taesd_encoder/taesd_decoder)`, { field: 'vae' });
    return { name: 'full', vae: { encoder: this.pack.vaeEncoder, decoder: this.pack.vaeDecoder } };
  }

  /**
   * Images ([3, H, W] floats in [-1, 1], or RGB bytes [H, W, 3]) -> scaled latents. `handOver`: the caller is done
   * with the images (a frame's bytes then move to the encoder's thread uncopied).
   */
  async encodeImages(images: readonly ImageInput[], size: Size, vae: Vae = this.vae('full', false).vae, handOver = false): Promise<Float32Array[]> {
    const encoder = vae.encoder;
    if (!encoder) throw new ServiceError('unsupported', `model pack ${this.pack.name} has no ${vae === this.pack.tinyVae ? 'taesd_encoder' : 'vae_encoder'}: img2img is not available`);
    return encoder.encode(images, size.height, size.width, handOver);
  }

  /** Scaled latents -> images [3, H, W] in [-1, 1]. */
  async decodeLatents(latents: readonly Float32Array[], size: Size, vae: Vae = this.vae('full', false).vae): Promise<Float32Array[]> {
    return (await vae.decoder.decode(latents, size.latentHeight, size.latentWidth)).images;
  }

  /** Scaled latents -> RGB bytes [H, W, 3] (the conversion runs beside the decoder, off this thread). */
  async decodeToRgb8(latents: readonly Float32Array[], size: Size, vae: Vae = this.vae('full', false).vae): Promise<Uint8Array[]> {
    return (await vae.decoder.decodeRgb8(latents, size.latentHeight, size.latentWidth)).images;
  }

  /** Releases the pack's sessions (and its worker pool when it has its own). */
  async close(): Promise<void> {
    await this.pack.sessions.close();
  }
}

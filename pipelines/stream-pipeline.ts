/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt and guidance apply to the frames in flight, a new schedule or size re-primes the buffer.
 */
import type { Engine, EncodedPrompt, Size } from './engine.ts';
import type { UnetRunner } from './denoise-step.ts';
import { mergeParams, type GenerationParams } from './params.ts';
import { makeGuidance } from './rcfg.ts';
import { Generator } from './random.ts';
import type { StepCoefficients } from './schedulers/lcm.ts';
import { SimilarityFilter } from './similarity-filter.ts';
import { StreamBatch } from './stream-batch.ts';
import type { UnetVariant } from './variants.ts';

export interface FrameResult<Tag = unknown> {
  /** The tag of the input frame this output shows (outputs lag inputs by steps - 1 frames). */
  readonly source: Tag | undefined;
  /** [3, H, W] in [-1, 1] */
  readonly image: Float32Array;
  readonly width: number;
  readonly height: number;
  /** True when the similarity filter skipped the models and repeated the previous output. */
  readonly skipped: boolean;
  readonly similarity: number | undefined;
  /** The UNet that made it (expert, adapters). */
  readonly variant: UnetVariant;
}

/** Makes the UNet runner for a frame size and UNet variant (the server's batcher, or the engine directly). */
export type RunnerFactory = (size: Size, variant: UnetVariant) => UnetRunner;

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

export class StreamPipeline {
  private size!: Size;
  private coefficients!: StepCoefficients;
  private batch!: StreamBatch;
  private prompt!: EncodedPrompt;
  private lastOutput: FrameResult | undefined;
  private variantInUse!: UnetVariant;
  /** Warnings of the variant's build (adapter keys that matched nothing ...). */
  private variantNotes: readonly string[] = [];
  /** Updates run one after another, so a slow one (an adapter merge) cannot be overtaken. */
  private updates: Promise<unknown> = Promise.resolve();
  /** Tags of the frames in the stream batch's buffer, oldest first (the first frame fills it when priming). */
  private inFlightTags: unknown[] = [];
  readonly filter: SimilarityFilter;

  private constructor(
    private readonly engine: Engine,
    private current: GenerationParams,
    private readonly runners: RunnerFactory,
  ) {
    const seed = typeof current.seed === 'number' ? current.seed : current.seed[0]!.seed;
    this.filter = new SimilarityFilter(
      { threshold: current.similarity_threshold, maxSkipFrames: current.max_skip_frames },
      new Generator((seed ^ FILTER_SEED_SALT) >>> 0),
    );
  }

  static async create(engine: Engine, params: GenerationParams, runners?: RunnerFactory): Promise<StreamPipeline> {
    const stream = new StreamPipeline(engine, params, runners ?? ((size, variant) => engine.unetRunner(size, variant)));
    const { prompt, variant } = await engine.prepare(params);
    [stream.prompt, stream.variantInUse, stream.variantNotes] = [prompt, variant, variant.warnings];
    stream.rebuild();
    return stream;
  }

  get params(): GenerationParams {
    return this.current;
  }

  get frameSize(): Size {
    return this.size;
  }

  /** The UNet variant (expert, adapters) serving the stream's frames now. */
  get variant(): UnetVariant {
    return this.variantInUse;
  }

  /** What the caller should know about the current parameters (a prompt cut at 77 tokens, adapter keys skipped). */
  get warnings(): readonly string[] {
    return [...this.prompt.warnings, ...this.variantNotes];
  }

  /**
   * Applies a live update from the next frame on. Validation errors throw and change nothing. Frames keep
   * flowing on the current UNet while a new variant (an adapter merge) is built; the swap happens between
   * two frames.
   */
  update(update: unknown): Promise<GenerationParams> {
    const run = this.updates.then(() => this.applyUpdate(update));
    this.updates = run.catch(() => undefined);
    return run;
  }

  private async applyUpdate(update: unknown): Promise<GenerationParams> {
    const next = mergeParams(this.current, update);
    const changed = (...keys: (keyof GenerationParams)[]) => keys.some((k) => JSON.stringify(next[k]) !== JSON.stringify(this.current[k]));
    // Prepare everything first: if any part fails, the stream keeps its old prompt, UNet and parameters.
    // prompt and variant go together: adapters' concept tokens change how the prompt is encoded (both cached)
    // an LCM-distilled UNet embeds the guidance scale with the prompt (timestep_cond)
    const embedsGuidance = this.engine.pack.unet.guidanceEmbeddingSize > 0 && changed('guidance_scale');
    const prepared = embedsGuidance || changed('prompt', 'prompt_blend', 'negative_prompt', 'budget', 'expert', 'adapters') ? await this.engine.prepare(next) : undefined;
    const previous = this.current;
    this.current = next;
    if (prepared) [this.prompt, this.variantInUse, this.variantNotes] = [prepared.prompt, prepared.variant, prepared.variant.warnings];
    this.filter.config = { threshold: next.similarity_threshold, maxSkipFrames: next.max_skip_frames };
    if (changed('width', 'height', 'frame_buffer_size', 'steps', 'strength', 't_index_list')) {
      this.rebuild();
      if (previous.width !== next.width || previous.height !== next.height) this.filter.reset();
      return next;
    }
    if (changed('guidance', 'guidance_scale', 'delta')) this.batch.setGuidance(makeGuidance(next.guidance, next.guidance_scale, next.delta));
    if (changed('seed')) this.batch.setNoise(this.engine.noise(next, this.coefficients.timesteps.length, next.frame_buffer_size, this.size, false));
    return next;
  }

  /**
   * Processes one group of frame_buffer_size frames ([3, H, W] each at frameSize) and returns the group
   * that finished. With one frame per group the similarity filter may skip the models entirely.
   * `tag` (e.g. the input frame id) comes back on the output that shows this frame.
   */
  async process<Tag>(frames: readonly Float32Array[], tag?: Tag): Promise<FrameResult<Tag>[]> {
    const { width, height } = this.size;
    // 1. filter: a near-identical frame repeats the previous output and runs no model
    if (frames.length === 1) {
      const decision = this.filter.check(frames[0]!);
      if (decision.skip && this.lastOutput) return [{ ...(this.lastOutput as FrameResult<Tag>), skipped: true, similarity: decision.similarity }];
    }
    // 2. encode, 3. denoise in the stream batch, 4. decode
    const latents = await this.engine.encodeImages(frames, this.size);
    const source = this.trackSource(tag);
    const variant = this.variantInUse;
    const denoised = await this.batch.process(latents, this.prompt, this.runners(this.size, variant));
    const images = await this.engine.decodeLatents(denoised, this.size);
    const results = images.map((image) => ({ source, image, width, height, skipped: false, similarity: undefined, variant }));
    this.lastOutput = results[results.length - 1];
    return results;
  }

  private trackSource<Tag>(tag: Tag | undefined): Tag | undefined {
    const lag = this.coefficients.timesteps.length - 1;
    if (this.batch.inFlight === 0) this.inFlightTags = new Array<unknown>(lag).fill(tag); // priming repeats the first frame
    this.inFlightTags.push(tag);
    return this.inFlightTags.shift() as Tag | undefined;
  }

  /** txt2img streaming: every call denoises fresh noise (zeros in, the initial noise does the rest). */
  async generate(): Promise<FrameResult[]> {
    const zeros = Array.from({ length: this.current.frame_buffer_size }, () => new Float32Array(this.engine.latentSize(this.size)));
    const variant = this.variantInUse;
    const denoised = await this.batch.process(zeros, this.prompt, this.runners(this.size, variant));
    const images = await this.engine.decodeLatents(denoised, this.size);
    return images.map((image) => ({ source: undefined, image, width: this.size.width, height: this.size.height, skipped: false, similarity: undefined, variant }));
  }

  private rebuild(): void {
    const p = this.current;
    this.size = this.engine.size(p);
    this.coefficients = this.engine.coefficients(p, 'img2img');
    const noise = this.engine.noise(p, this.coefficients.timesteps.length, p.frame_buffer_size, this.size, false);
    this.batch = new StreamBatch(this.coefficients, makeGuidance(p.guidance, p.guidance_scale, p.delta), noise);
    this.lastOutput = undefined;
  }
}

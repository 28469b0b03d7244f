/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt, guidance, seed and the UNet variant apply to the frames in flight; a new schedule or size
 * re-primes the buffer. Frames and parameter changes take turns: a change never lands inside a frame.
 */
import type { Engine, EncodedPrompt, Size } from './engine.ts';
import type { UnetRunner } from './denoise-step.ts';
import type { Fit } from './image.ts';
import { mergeParams, paramsSchema, type GenerationParams } from './params.ts';
import { makeGuidance } from './rcfg.ts';
import { Generator } from './random.ts';
import type { StepCoefficients } from './schedulers/lcm.ts';
import { SimilarityFilter } from './similarity-filter.ts';
import { StreamBatch } from './stream-batch.ts';
import type { UnetVariant } from './variants.ts';

export interface FrameResult<Tag = unknown> {
  /**
   * The tag of the input frame this output shows (outputs lag inputs by steps - 1 frames). A repeated output
   * (skipped) shows the input the filter judged unchanged, and the frames in flight then stand for it too.
   */
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

/** Produces one input frame [3, H, W] in [-1, 1] at the size (and fit) the stream runs at when its turn comes. */
export type FrameLoader = (size: Size, fit: Fit) => Promise<Float32Array>;

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

/** Parameters that decide the prompt embeddings and the UNet variant (both prepared before a change applies). */
const PROMPT_KEYS = ['prompt', 'prompt_blend', 'negative_prompt', 'budget', 'expert', 'adapters'] as const;
/** Parameters that decide the step schedule and the frame size: a change re-primes the buffer. */
const SCHEDULE_KEYS = ['frame_buffer_size', 'steps', 'strength', 't_index_list'] as const;

function changed(a: GenerationParams, b: GenerationParams, keys: readonly (keyof GenerationParams)[]): boolean {
  return keys.some((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

export class StreamPipeline {
  private size!: Size;
  private coefficients!: StepCoefficients;
  private batch!: StreamBatch;
  private prompt!: EncodedPrompt;
  private lastOutput: FrameResult | undefined;
  private variantInUse!: UnetVariant;
  /** The aspect (width / height) of the latest input frame: the size follows it when the parameters set none. */
  private inputAspect: number | undefined;
  /** Updates run one after another, so a slow one (an adapter merge) cannot be overtaken. */
  private updates: Promise<unknown> = Promise.resolve();
  /** Updates queued that build a new UNet variant (see buildsVariant). */
  private variantBuilds = 0;
  /** Frames and the moments updates apply take turns here: nothing changes inside a frame. */
  private turn: Promise<unknown> = Promise.resolve();
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
    ({ prompt: stream.prompt, variant: stream.variantInUse } = await engine.prepare(params));
    stream.rebuild();
    return stream;
  }

  get params(): GenerationParams {
    return this.current;
  }

  /** The size the next frame runs at. */
  get frameSize(): Size {
    return this.size;
  }

  /** The UNet variant (expert, adapters) serving the stream's frames now. */
  get variant(): UnetVariant {
    return this.variantInUse;
  }

  /**
   * Whether this update builds a new UNet variant (new adapters: a merge on a worker, up to seconds), or
   * follows one still being built. Such updates apply once the variant is ready while frames keep flowing on
   * the old one; every other update is quick and may hold frames back until it applies.
   */
  buildsVariant(update: unknown): boolean {
    if (this.variantBuilds > 0) return true;
    if (typeof update !== 'object' || update === null || !('adapters' in update)) return false;
    const adapters = paramsSchema.shape.adapters.safeParse((update as { adapters: unknown }).adapters);
    const active = (list: GenerationParams['adapters']) => JSON.stringify(list.filter((a) => a.weight !== 0));
    return adapters.success && active(adapters.data) !== active(this.current.adapters);
  }

  /**
   * Applies a live update between two frames, after `when` resolves (the caller's turn: a server holds it
   * until the frames that arrived before the update have run). Validation errors throw and change nothing.
   * A new variant (an adapter merge) is built first, with frames flowing on the current UNet meanwhile.
   */
  update(update: unknown, when: Promise<unknown> = Promise.resolve()): Promise<GenerationParams> {
    const build = this.buildsVariant(update);
    if (build) this.variantBuilds++;
    const run = this.updates.then(() => this.applyUpdate(update, when)).finally(() => build && this.variantBuilds--);
    this.updates = run.catch(() => undefined);
    return run;
  }

  private async applyUpdate(update: unknown, when: Promise<unknown>): Promise<GenerationParams> {
    // 1. validate and prepare everything: if any part fails, the stream keeps its parameters, prompt and UNet
    const next = mergeParams(this.current, update);
    this.engine.size(next, this.inputAspect); // the size must suit the model (names the field otherwise)
    // prompt and variant go together: adapters' concept tokens change how the prompt is encoded (both cached)
    const { prompt, variant } = changed(this.current, next, PROMPT_KEYS) ? await this.engine.prepare(next) : { prompt: this.prompt, variant: this.variantInUse };
    // 2. apply between frames, once the caller's turn has come
    await when;
    return this.exclusive(() => {
      const previous = this.current;
      this.current = next;
      this.prompt = prompt;
      this.variantInUse = variant;
      this.filter.config = { threshold: next.similarity_threshold, maxSkipFrames: next.max_skip_frames };
      const size = this.engine.size(next, this.inputAspect);
      if (changed(previous, next, SCHEDULE_KEYS) || size.width !== this.size.width || size.height !== this.size.height) {
        this.rebuild();
        return next;
      }
      if (changed(previous, next, ['guidance', 'guidance_scale', 'delta'])) this.batch.setGuidance(makeGuidance(next.guidance, next.guidance_scale, next.delta));
      if (changed(previous, next, ['seed'])) this.batch.setNoise(this.noise());
      return next;
    });
  }

  /**
   * Processes one group of frame_buffer_size frames ([3, H, W] each at frameSize) and returns the group
   * that finished. With one frame per group the similarity filter may skip the models entirely.
   * `tag` (e.g. the input frame id) comes back on the output that shows this frame.
   */
  process<Tag>(frames: readonly Float32Array[], tag?: Tag): Promise<FrameResult<Tag>[]> {
    return this.exclusive(() => this.run(frames, tag));
  }

  /**
   * Processes one input frame produced by `load` at the stream's size when its turn comes. `aspect` is the
   * input's shape (width / height): when the parameters fix no size, the stream follows it (a new size
   * re-primes the buffer).
   */
  processInput<Tag>(load: FrameLoader, tag: Tag, aspect?: number): Promise<FrameResult<Tag>[]> {
    return this.exclusive(async () => {
      if (aspect !== undefined && aspect !== this.inputAspect) this.followAspect(aspect);
      return this.run([await load(this.size, this.current.fit)], tag);
    });
  }

  /** txt2img streaming: every call denoises fresh noise (zeros in, the initial noise does the rest). */
  generate(): Promise<FrameResult[]> {
    return this.exclusive(async () => {
      const zeros = Array.from({ length: this.current.frame_buffer_size }, () => new Float32Array(this.engine.latentSize(this.size)));
      const variant = this.variantInUse;
      const denoised = await this.batch.process(zeros, this.prompt, this.runners(this.size, variant));
      const images = await this.engine.decodeLatents(denoised, this.size);
      return images.map((image) => ({ source: undefined, image, width: this.size.width, height: this.size.height, skipped: false, similarity: undefined, variant }));
    });
  }

  private exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.turn.then(fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private async run<Tag>(frames: readonly Float32Array[], tag: Tag | undefined): Promise<FrameResult<Tag>[]> {
    const { width, height } = this.size;
    // 1. filter: a near-identical frame repeats the previous output and runs no model
    if (frames.length === 1) {
      const decision = this.filter.check(frames[0]!);
      if (decision.skip && this.lastOutput) {
        // the newest frame in flight is the one this input was compared with: it now stands for this input
        if (this.inFlightTags.length > 0) this.inFlightTags[this.inFlightTags.length - 1] = tag;
        return [{ ...(this.lastOutput as FrameResult<Tag>), source: tag, skipped: true, similarity: decision.similarity }];
      }
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

  /** A new input shape: re-size when the parameters leave the size to the input and the size changes. */
  private followAspect(aspect: number): void {
    this.inputAspect = aspect;
    const size = this.engine.size(this.current, aspect);
    if (size.width !== this.size.width || size.height !== this.size.height) this.rebuild();
  }

  private noise() {
    return this.engine.noise(this.current, this.coefficients.timesteps.length, this.current.frame_buffer_size, this.size, false);
  }

  /** New schedule or size: a fresh stream batch that re-primes with the next frame. */
  private rebuild(): void {
    const p = this.current;
    const size = this.engine.size(p, this.inputAspect);
    if (this.size && (size.width !== this.size.width || size.height !== this.size.height)) this.filter.reset();
    this.size = size;
    this.coefficients = this.engine.coefficients(p, 'img2img');
    this.batch = new StreamBatch(this.coefficients, makeGuidance(p.guidance, p.guidance_scale, p.delta), this.noise());
    this.lastOutput = undefined;
  }
}

/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt and guidance apply to the frames in flight, a new schedule or size re-primes the buffer.
 */
import type { Engine, Size } from './engine.ts';
import type { NoiseTable } from './denoise-step.ts';
import { mergeParams, type GenerationParams } from './params.ts';
import { planRequest, type Mode, type Plan, type RunnerFactory } from './plan.ts';
import { Generator } from './random.ts';
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

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

export class StreamPipeline {
  private plan!: Plan;
  private batch!: StreamBatch;
  private lastOutput: FrameResult | undefined;
  /** Updates run one after another, so a slow one (an adapter merge) cannot be overtaken. */
  private updates: Promise<unknown> = Promise.resolve();
  /** Tags of the frames in the stream batch's buffer, oldest first (the first frame fills it when priming). */
  private inFlightTags: unknown[] = [];
  readonly filter: SimilarityFilter;

  private constructor(
    private readonly engine: Engine,
    params: GenerationParams,
    private readonly runners: RunnerFactory | undefined,
  ) {
    const seed = typeof params.seed === 'number' ? params.seed : params.seed[0]!.seed;
    this.filter = new SimilarityFilter(
      { threshold: params.similarity_threshold, maxSkipFrames: params.max_skip_frames },
      new Generator((seed ^ FILTER_SEED_SALT) >>> 0),
    );
  }

  /**
   * A stream of frames (img2img: each frame is encoded and noised to the strength) or a txt2img stream
   * (every call denoises fresh noise, see generate()).
   */
  static async create(engine: Engine, params: GenerationParams, runners?: RunnerFactory, mode: Mode = 'img2img'): Promise<StreamPipeline> {
    const stream = new StreamPipeline(engine, params, runners);
    stream.plan = await planRequest(engine, params, mode, runners);
    stream.rebuild();
    return stream;
  }

  get params(): GenerationParams {
    return this.plan.params;
  }

  get frameSize(): Size {
    return this.plan.size;
  }

  /** Frames an output lags its input (steps - 1). */
  get lag(): number {
    return this.plan.coefficients.timesteps.length - 1;
  }

  /** The UNet variant (expert, adapters) serving the stream's frames now. */
  get variant(): UnetVariant {
    return this.plan.variant;
  }

  /** What the caller should know about the current parameters (a prompt cut at 77 tokens, adapter keys skipped). */
  get warnings(): readonly string[] {
    return this.plan.warnings;
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
    // 1. plan the new parameters completely first: if any part fails, the stream keeps its old plan
    const next = await planRequest(this.engine, mergeParams(this.plan.params, update), this.plan.mode, this.runners);
    const before = this.plan;
    this.plan = next;
    const p = next.params;
    this.filter.config = { threshold: p.similarity_threshold, maxSkipFrames: p.max_skip_frames };
    // 2. a new size or schedule re-primes the buffer; prompt, variant and guidance apply to the frames in flight
    const sizeChanged = before.size.width !== next.size.width || before.size.height !== next.size.height;
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (sizeChanged || !same(before.coefficients.timesteps, next.coefficients.timesteps) || before.params.frame_buffer_size !== p.frame_buffer_size) {
      this.rebuild();
      if (sizeChanged) this.filter.reset();
      return p;
    }
    if (!same(before.guidance, next.guidance)) this.batch.setGuidance(next.guidance);
    if (!same(before.params.seed, p.seed)) this.batch.setNoise(this.noise());
    return p;
  }

  /**
   * Processes one group of frame_buffer_size frames ([3, H, W] each at frameSize) and returns the group
   * that finished. With one frame per group the similarity filter may skip the models entirely.
   * `tag` (e.g. the input frame id) comes back on the output that shows this frame.
   */
  async process<Tag>(frames: readonly Float32Array[], tag?: Tag): Promise<FrameResult<Tag>[]> {
    const { size, prompt, variant, runner } = this.plan;
    const { width, height } = size;
    // 1. filter: a near-identical frame repeats the previous output and runs no model
    if (frames.length === 1) {
      const decision = this.filter.check(frames[0]!);
      if (decision.skip && this.lastOutput) return [{ ...(this.lastOutput as FrameResult<Tag>), skipped: true, similarity: decision.similarity }];
    }
    // 2. encode, 3. denoise in the stream batch, 4. decode
    const latents = await this.engine.encodeImages(frames, size);
    const source = this.trackSource(tag);
    const denoised = await this.batch.process(latents, prompt, runner);
    const images = await this.engine.decodeLatents(denoised, size);
    const results = images.map((image) => ({ source, image, width, height, skipped: false, similarity: undefined, variant }));
    this.lastOutput = results[results.length - 1];
    return results;
  }

  private trackSource<Tag>(tag: Tag | undefined): Tag | undefined {
    if (this.batch.inFlight === 0) this.inFlightTags = new Array<unknown>(this.lag).fill(tag); // priming repeats the first frame
    this.inFlightTags.push(tag);
    return this.inFlightTags.shift() as Tag | undefined;
  }

  /** txt2img streaming: every call denoises fresh noise (zeros in, the initial noise does the rest). */
  async generate(): Promise<FrameResult[]> {
    const { size, prompt, variant, runner } = this.plan;
    const zeros = Array.from({ length: this.plan.params.frame_buffer_size }, () => new Float32Array(this.engine.latentSize(size)));
    const denoised = await this.batch.process(zeros, prompt, runner);
    const images = await this.engine.decodeLatents(denoised, size);
    return images.map((image) => ({ source: undefined, image, width: size.width, height: size.height, skipped: false, similarity: undefined, variant }));
  }

  /** The stream's initial noise: drawn once from the seed, reused every frame. */
  private noise(): NoiseTable {
    const { params, coefficients, size } = this.plan;
    return this.engine.noise(params, coefficients.timesteps.length, params.frame_buffer_size, size, false);
  }

  private rebuild(): void {
    this.batch = new StreamBatch(this.plan.coefficients, this.plan.guidance, this.noise());
    this.lastOutput = undefined;
  }
}

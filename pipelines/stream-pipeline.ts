/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt, guidance, seed and the UNet variant apply to the frames in flight; a new schedule or size
 * re-primes the buffer. Frames and parameter changes take turns: a change never lands inside a frame.
 */
import type { Engine, Size } from './engine.ts';
import type { NoiseTable } from './denoise-step.ts';
import type { Fit } from './codecs/image.ts';
import { mergeParams, paramsSchema, type GenerationParams } from './params.ts';
import { planRequest, resizePlan, type Mode, type Plan, type RunnerFactory } from './plan.ts';
import { Generator } from './random.ts';
import { SimilarityFilter } from './similarity-filter.ts';
import { StreamBatch } from './stream-batch.ts';
import type { UnetVariant } from './variants.ts';

export interface FrameResult<Tag = unknown> {
  /**
   * The tag of the input frame this output shows (outputs lag inputs by steps - 1 frames). A repeated output
   * (skipped) shows the input the filter judged unchanged, and the frame in flight then stands for it too.
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

/** Produces one input frame [3, H, W] in [-1, 1] at the size (and fit) the stream runs at when its turn comes. */
export type FrameLoader = (size: Size, fit: Fit) => Promise<Float32Array>;

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const sameSize = (a: Size, b: Size) => a.width === b.width && a.height === b.height;

export class StreamPipeline {
  private plan!: Plan;
  private batch!: StreamBatch;
  /** The size the stream batch was built for (a new one resets the filter). */
  private batchSize: Size | undefined;
  private lastOutput: FrameResult | undefined;
  /** The shape (width / height) of the latest input frame: the size follows it when the parameters set none. */
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

  /** The size the next frame runs at. */
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

  /**
   * Whether this update builds a new UNet variant (new adapters: a merge on a worker, up to seconds), or
   * follows one still being built. Such updates apply once the variant is ready while frames keep flowing on
   * the old one; every other update is quick, and a caller may hold frames back until it applies.
   */
  buildsVariant(update: unknown): boolean {
    if (this.variantBuilds > 0) return true;
    if (typeof update !== 'object' || update === null || !('adapters' in update)) return false;
    const adapters = paramsSchema.shape.adapters.safeParse((update as { adapters: unknown }).adapters);
    const active = (list: GenerationParams['adapters']) => JSON.stringify(list.filter((a) => a.weight !== 0));
    return adapters.success && active(adapters.data) !== active(this.plan.params.adapters);
  }

  /**
   * Applies a live update between two frames, once `when` resolves (the caller's turn: a server holds it until
   * the frames that arrived before the update have run). Validation errors throw and change nothing. A new
   * variant (an adapter merge) is built first, with frames flowing on the current UNet meanwhile.
   */
  update(update: unknown, when: Promise<unknown> = Promise.resolve()): Promise<GenerationParams> {
    const build = this.buildsVariant(update);
    if (build) this.variantBuilds++;
    const run = this.updates.then(() => this.applyUpdate(update, when)).finally(() => build && this.variantBuilds--);
    this.updates = run.catch(() => undefined);
    return run;
  }

  private async applyUpdate(update: unknown, when: Promise<unknown>): Promise<GenerationParams> {
    // 1. plan the new parameters completely first: if any part fails, the stream keeps its old plan
    const next = await planRequest(this.engine, mergeParams(this.plan.params, update), this.plan.mode, this.runners, this.inputAspect);
    // 2. apply between frames, once the caller's turn has come
    await when;
    return this.exclusive(() => this.apply(next));
  }

  private apply(planned: Plan): GenerationParams {
    // the input's shape may have changed while the update was planned
    const size = this.engine.size(planned.params, this.inputAspect);
    const next = sameSize(size, planned.size) ? planned : resizePlan(this.engine, planned, size, this.runners);
    const before = this.plan;
    this.plan = next;
    const p = next.params;
    this.filter.config = { threshold: p.similarity_threshold, maxSkipFrames: p.max_skip_frames };
    // a new size or schedule re-primes the buffer; prompt, variant and guidance apply to the frames in flight
    if (!sameSize(before.size, next.size) || !same(before.coefficients.timesteps, next.coefficients.timesteps) || before.params.frame_buffer_size !== p.frame_buffer_size) {
      this.rebuild();
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
  process<Tag>(frames: readonly Float32Array[], tag?: Tag): Promise<FrameResult<Tag>[]> {
    return this.exclusive(() => this.run(frames, tag));
  }

  /**
   * Processes one input frame that `load` produces at the stream's size when its turn comes. `aspect` is the
   * input's shape (width / height): when the parameters fix no size the stream follows it (a new size
   * re-primes the buffer).
   */
  processInput<Tag>(load: FrameLoader, tag: Tag, aspect?: number): Promise<FrameResult<Tag>[]> {
    return this.exclusive(async () => {
      if (aspect !== undefined && aspect !== this.inputAspect) this.followAspect(aspect);
      return this.run([await load(this.plan.size, this.plan.params.fit)], tag);
    });
  }

  /** txt2img streaming: every call denoises fresh noise (zeros in, the initial noise does the rest). */
  generate(): Promise<FrameResult[]> {
    return this.exclusive(async () => {
      const { size, prompt, variant, runner } = this.plan;
      const zeros = Array.from({ length: this.plan.params.frame_buffer_size }, () => new Float32Array(this.engine.latentSize(size)));
      const denoised = await this.batch.process(zeros, prompt, runner);
      const images = await this.engine.decodeLatents(denoised, size);
      return images.map((image) => ({ source: undefined, image, width: size.width, height: size.height, skipped: false, similarity: undefined, variant }));
    });
  }

  private exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.turn.then(fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private async run<Tag>(frames: readonly Float32Array[], tag: Tag | undefined): Promise<FrameResult<Tag>[]> {
    const { size, prompt, variant, runner } = this.plan;
    const { width, height } = size;
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

  /** A new input shape: a new size when the parameters leave the size to the input and it changes. */
  private followAspect(aspect: number): void {
    this.inputAspect = aspect;
    const size = this.engine.size(this.plan.params, aspect);
    if (sameSize(size, this.plan.size)) return;
    this.plan = resizePlan(this.engine, this.plan, size, this.runners);
    this.rebuild();
  }

  /** The stream's initial noise: drawn once from the seed, reused every frame. */
  private noise(): NoiseTable {
    const { params, coefficients, size } = this.plan;
    return this.engine.noise(params, coefficients.timesteps.length, params.frame_buffer_size, size, false);
  }

  /** A fresh stream batch that re-primes with the next frame (a new size also forgets the filter's last input). */
  private rebuild(): void {
    if (this.batchSize && !sameSize(this.batchSize, this.plan.size)) this.filter.reset();
    this.batchSize = this.plan.size;
    this.batch = new StreamBatch(this.plan.coefficients, this.plan.guidance, this.noise());
    this.lastOutput = undefined;
  }
}

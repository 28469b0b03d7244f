/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt and guidance apply to the frames in flight, a new schedule or size re-primes the buffer.
 *
 * Frames are pipelined across the model workers: process() may be called again before the previous call has
 * finished. A frame's VAE encode starts at once (beside the previous frame's UNet call), the stream-batch steps
 * run one after another in call order, a frame's decode runs beside the next frame's step, and results resolve
 * in call order. room() tells the caller when to hand over the next frame (PIPELINE_DEPTH frames in flight).
 * A frame keeps the size and VAE of the moment it entered; each step takes the prompt, UNet variant, guidance and
 * seed current when it starts (a step is never changed half-way), as one frame at a time would.
 */
import type { ImageInput } from '../models/components.ts';
import { withUrgency, type Urgency } from '../models/runtime/urgency.ts';
import type { Engine, Size, VaeChoice } from './engine.ts';
import type { NoiseTable } from './denoise-step.ts';
import { rgb8ToTensor } from './codecs/image.ts';
import { mergeParams, type GenerationParams } from './params.ts';
import { planRequest, BATCH_DEFAULTS, type Mode, type Plan, type PlanDefaults, type RunnerFactory } from './plan.ts';
import { Generator } from './random.ts';
import { SimilarityFilter } from './similarity-filter.ts';
import { StreamBatch } from './stream-batch.ts';
import type { UnetVariant } from './variants.ts';

/**
 * Frames a stream has in its pipeline at once: one being encoded while the one before is denoised and decoded.
 * More would wait in front of the UNet, where latest-frame-wins can no longer replace them by newer ones.
 */
export const PIPELINE_DEPTH = 2;

/** A frame in: an image tensor [3, H, W] in [-1, 1], or RGB bytes [H, W, 3] (the lean path: no float copy here). */
export type FrameInput = ImageInput;

export interface FrameResult<Tag = unknown> {
  /** The tag of the input frame this output shows (outputs lag inputs by steps - 1 frames). */
  readonly source: Tag | undefined;
  /** RGB bytes [H, W, 3], as the VAE decoder's thread made them. */
  readonly rgb: Uint8Array;
  /** [3, H, W] in [-1, 1], made from `rgb` when first read (encoding it gives the same bytes as `rgb`). */
  readonly image: Float32Array;
  readonly width: number;
  readonly height: number;
  /** True when the similarity filter skipped the models and repeated the previous output. */
  readonly skipped: boolean;
  readonly similarity: number | undefined;
  /** The UNet that made it (expert, adapters). */
  readonly variant: UnetVariant;
  /** The VAE that encoded and decoded it. */
  readonly vae: VaeChoice;
  /** Denoising steps it went through. */
  readonly steps: number;
}

/** Float images made from outputs' bytes, so a repeated output (same bytes) gives the same array. */
const floatImages = new WeakMap<Uint8Array, Float32Array>();

function frameResult<Tag>(fields: Omit<FrameResult<Tag>, 'image'>): FrameResult<Tag> {
  const get = () => {
    let image = floatImages.get(fields.rgb);
    if (!image) floatImages.set(fields.rgb, (image = rgb8ToTensor(fields.rgb, fields.width, fields.height)));
    return image;
  };
  return Object.defineProperty({ ...fields }, 'image', { get, enumerable: false }) as FrameResult<Tag>;
}

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

export class StreamPipeline {
  private plan!: Plan;
  /** The stream's own parameters (what updates change); the plan's may differ by the load valve's overrides. */
  private own!: GenerationParams;
  /** Parameters the load valve lays over the stream's own (pipelines/load-valve.ts); {} when not degraded. */
  private overrides: Partial<GenerationParams> = {};
  private batch!: StreamBatch;
  /** The results of the newest frame that ran the models (a skipped frame repeats them). */
  private last: Promise<FrameResult[]> | undefined;
  /** Updates run one after another, so a slow one (an adapter merge) cannot be overtaken. */
  private updates: Promise<unknown> = Promise.resolve();
  /** The stream-batch steps, one after another in call order. */
  private steps: Promise<unknown> = Promise.resolve();
  /** Guidance and noise changes for the current batch, made at the start of its next step. */
  private pending: { guidance?: Plan['guidance']; noise?: NoiseTable } = {};
  /** Settles after the newest frame's results: results resolve in call order. */
  private delivered: Promise<unknown> = Promise.resolve();
  /** Tags of the frames in the stream batch's buffer, oldest first (the first frame fills it when priming). */
  private inFlightTags: unknown[] = [];
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  readonly filter: SimilarityFilter;

  private constructor(
    private readonly engine: Engine,
    params: GenerationParams,
    private readonly runners: RunnerFactory | undefined,
    private readonly defaults: PlanDefaults,
  ) {
    const seed = typeof params.seed === 'number' ? params.seed : params.seed[0]!.seed;
    this.filter = new SimilarityFilter(
      { threshold: params.similarity_threshold, maxSkipFrames: params.max_skip_frames },
      new Generator((seed ^ FILTER_SEED_SALT) >>> 0),
    );
  }

  /**
   * A stream of frames (img2img: each frame is encoded and noised to the strength) or a txt2img stream
   * (every call denoises fresh noise, see generate()). `defaults` fill unset parameters (the server's live
   * defaults: the tiny VAE); batch defaults otherwise.
   */
  static async create(engine: Engine, params: GenerationParams, runners?: RunnerFactory, mode: Mode = 'img2img', defaults: PlanDefaults = BATCH_DEFAULTS): Promise<StreamPipeline> {
    const stream = new StreamPipeline(engine, params, runners, defaults);
    stream.plan = await planRequest(engine, params, mode, runners, defaults);
    stream.own = stream.plan.params;
    stream.rebuild();
    return stream;
  }

  /** The stream's own parameters (without the load valve's overrides). */
  get params(): GenerationParams {
    return this.own;
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

  /** Which VAE the stream's frames go through now. */
  get vae(): VaeChoice {
    return this.plan.vaeName;
  }

  /**
   * Applies a live update from the next frame on. Validation errors throw and change nothing. Frames keep
   * flowing on the current UNet while a new variant (an adapter merge) is built; the swap happens between
   * two frames.
   */
  update(update: unknown): Promise<GenerationParams> {
    return this.serially(() => this.applyUpdate(mergeParams(this.own, update), this.overrides));
  }

  /**
   * Lays the load valve's parameters over the stream's own from the next frame on ({} restores the stream's
   * plan), the way an update would; the stream's own parameters stay as they are.
   */
  degrade(overrides: Partial<GenerationParams>): Promise<GenerationParams> {
    return this.serially(() => this.applyUpdate(this.own, overrides));
  }

  private serially(fn: () => Promise<GenerationParams>): Promise<GenerationParams> {
    const run = this.updates.then(fn);
    this.updates = run.catch(() => undefined);
    return run;
  }

  private async applyUpdate(own: GenerationParams, overrides: Partial<GenerationParams>): Promise<GenerationParams> {
    // 1. plan the new parameters completely first: if any part fails, the stream keeps its old plan
    const planned = Object.keys(overrides).length === 0 ? own : mergeParams(own, overrides);
    const next = await planRequest(this.engine, planned, this.plan.mode, this.runners, this.defaults);
    const before = this.plan;
    this.plan = next;
    this.own = own;
    this.overrides = overrides;
    const p = next.params;
    this.filter.config = { threshold: p.similarity_threshold, maxSkipFrames: p.max_skip_frames };
    // 2. a new size or schedule re-primes the buffer; prompt, variant and guidance apply to the frames in flight
    const sizeChanged = before.size.width !== next.size.width || before.size.height !== next.size.height;
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (sizeChanged || !same(before.coefficients.timesteps, next.coefficients.timesteps) || before.params.frame_buffer_size !== p.frame_buffer_size) {
      this.rebuild();
      if (sizeChanged) this.filter.reset();
      return own;
    }
    // made when the next step starts: a step in progress keeps the guidance it planned its rows with
    if (!same(before.guidance, next.guidance)) this.pending.guidance = next.guidance;
    if (!same(before.params.seed, p.seed)) this.pending.noise = this.noise();
    return own;
  }

  /** Resolves when the pipeline takes another frame (fewer than PIPELINE_DEPTH in flight). */
  room(): Promise<void> {
    if (this.inFlight < PIPELINE_DEPTH) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /**
   * Processes one group of frame_buffer_size frames (at frameSize each) and returns the group that finished.
   * With one frame per group the similarity filter may skip the models entirely. `tag` (e.g. the input frame id)
   * comes back on the output that shows this frame. `handOver`: the caller is done with the frames (byte frames
   * then move to the encoder's thread without a copy). `timing`: the frame's deadline and the stream's frame
   * interval, carried with the plan's class by every model call the frame makes (models/runtime/urgency.ts).
   * Calls may overlap; results resolve in call order.
   */
  process<Tag>(frames: readonly FrameInput[], tag?: Tag, handOver = false, timing: Omit<Urgency, 'class'> = {}): Promise<FrameResult<Tag>[]> {
    return withUrgency({ ...timing, class: this.plan.urgency }, () => this.processFrames(frames, tag, handOver));
  }

  private processFrames<Tag>(frames: readonly FrameInput[], tag: Tag | undefined, handOver: boolean): Promise<FrameResult<Tag>[]> {
    const entered = this.plan;
    const { size, vae, vaeName } = entered;
    const batch = this.batch;
    const { width, height } = size;
    // 1. filter, in call order: a near-identical frame repeats the previous output and runs no model
    if (frames.length === 1 && this.filter.enabled) {
      const decision = this.filter.check(frames[0]!);
      const last = this.last as Promise<FrameResult<Tag>[]> | undefined;
      if (decision.skip && last) {
        return this.inOrder(last.then((results) => results.map((r) => frameResult({ ...r, skipped: true, similarity: decision.similarity }))));
      }
    }
    this.inFlight++;
    // 2. encode now, beside the previous frame's step
    const latents = this.engine.encodeImages(frames, size, vae, handOver);
    // 3. one stream-batch step after another
    const step = this.steps.then(async () => {
      const z = await latents;
      const { prompt, runner, variant } = this.stepPlan(batch, entered);
      const source = this.trackSource(batch, tag);
      return { source, variant, denoised: await batch.process(z, prompt, runner) };
    });
    this.steps = step.catch(() => undefined);
    // 4. decode beside the next frame's step
    const decoded = step.then(async ({ source, variant, denoised }) => {
      const images = await this.engine.decodeToRgb8(denoised, size, vae);
      return images.map((rgb) => frameResult<Tag>({ source, rgb, width, height, skipped: false, similarity: undefined, variant, vae: vaeName, steps: batch.lag + 1 }));
    });
    const results = this.inOrder(decoded);
    this.last = results;
    const done = () => {
      this.inFlight--;
      while (this.inFlight < PIPELINE_DEPTH && this.waiting.length > 0) this.waiting.shift()!();
    };
    results.then(done, done);
    return results;
  }

  /** txt2img streaming: every call denoises fresh noise (zeros in, the initial noise does the rest). */
  generate(timing: Omit<Urgency, 'class'> = {}): Promise<FrameResult[]> {
    return withUrgency({ ...timing, class: this.plan.urgency }, () => this.generateFrame());
  }

  private async generateFrame(): Promise<FrameResult[]> {
    const entered = this.plan;
    const { size, vae, vaeName } = entered;
    const batch = this.batch;
    const zeros = Array.from({ length: entered.params.frame_buffer_size }, () => new Float32Array(this.engine.latentSize(size)));
    const step = this.steps.then(async () => {
      const { prompt, runner, variant } = this.stepPlan(batch, entered);
      return { variant, denoised: await batch.process(zeros, prompt, runner) };
    });
    this.steps = step.catch(() => undefined);
    const { variant, denoised } = await step;
    const images = await this.engine.decodeToRgb8(denoised, size, vae);
    return images.map((rgb) => frameResult({ source: undefined, rgb, width: size.width, height: size.height, skipped: false, similarity: undefined, variant, vae: vaeName, steps: batch.lag + 1 }));
  }

  /**
   * What a step starting now runs with: the current plan and the batch changes made since the last step, or, for
   * a batch an update has replaced (a frame that entered before a re-prime), the plan the frame entered with.
   */
  private stepPlan(batch: StreamBatch, entered: Plan): Plan {
    if (batch !== this.batch) return entered;
    const { guidance, noise } = this.pending;
    this.pending = {};
    if (guidance) batch.setGuidance(guidance);
    if (noise) batch.setNoise(noise);
    return this.plan;
  }

  /** Settles `p` only after every earlier frame's results. */
  private inOrder<T>(p: Promise<T>): Promise<T> {
    const before = this.delivered;
    const ordered = p.then(
      async (value) => (await before, value),
      async (error: unknown) => {
        await before;
        throw error;
      },
    );
    this.delivered = ordered.catch(() => undefined);
    return ordered;
  }

  private trackSource<Tag>(batch: StreamBatch, tag: Tag | undefined): Tag | undefined {
    if (batch.inFlight === 0) this.inFlightTags = new Array<unknown>(batch.lag).fill(tag); // priming repeats the first frame
    this.inFlightTags.push(tag);
    return this.inFlightTags.shift() as Tag | undefined;
  }

  /** The stream's initial noise: drawn once from the seed, reused every frame. */
  private noise(): NoiseTable {
    const { params, coefficients, size } = this.plan;
    return this.engine.noise(params, coefficients.timesteps.length, params.frame_buffer_size, size, false);
  }

  private rebuild(): void {
    this.batch = new StreamBatch(this.plan.coefficients, this.plan.guidance, this.noise());
    this.pending = {};
    this.last = undefined;
  }
}

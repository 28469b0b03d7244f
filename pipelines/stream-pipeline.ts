/**
 * One live stream: frame in -> similarity filter -> VAE encode -> stream batch -> VAE decode -> frame out.
 * Each stream owns its buffer, noise, stock noise and filter state (two streams never mix frames), and
 * every parameter can change between frames without reloading sessions or emitting a broken frame:
 * prompt, guidance, seed and the UNet variant apply to the frames in flight; a new schedule or size
 * re-primes the buffer.
 *
 * Frames are pipelined across the model workers: process() may be called again before the previous call has
 * finished. A frame's VAE encode starts at once (beside the previous frame's UNet call), the stream-batch steps
 * run one after another in call order, a frame's decode runs beside the next frame's step, and results resolve
 * in call order. room() tells the caller when to hand over the next frame (PIPELINE_DEPTH frames in flight).
 * A frame keeps the size and VAE of the moment it entered; each step takes the prompt, UNet variant, guidance and
 * seed current when it starts (a step is never changed half-way), as one frame at a time would. Frames enter
 * (processInput) and updates apply in turns, so an update never lands between loading a frame and its entry.
 */
import type { ImageInput } from '../models/components.ts';
import { withUrgency, type Urgency } from '../models/runtime/urgency.ts';
import type { Engine, Size, VaeChoice } from './engine.ts';
import type { NoiseTable } from './denoise-step.ts';
import { rgb8ToTensor, type Fit } from './codecs/image.ts';
import { mergeParams, paramsSchema, type GenerationParams } from './params.ts';
import { planRequest, resizePlan, BATCH_DEFAULTS, type Mode, type Plan, type PlanDefaults, type RunnerFactory } from './plan.ts';
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
  /**
   * The tag of the input frame this output shows (outputs lag inputs by steps - 1 frames). A repeated output
   * (skipped) shows the input the filter judged unchanged, and the frame in flight then stands for it too.
   */
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

/** Produces one input frame at the size (and fit) the stream runs at when its turn comes. */
export type FrameLoader = (size: Size, fit: Fit) => Promise<FrameInput>;

/** A frame handed to processInput: `entered` once it is in the pipeline, `results` when it has finished. */
export interface FrameEntry<Tag> {
  readonly entered: Promise<void>;
  readonly results: Promise<FrameResult<Tag>[]>;
}

/** A frame's tag while it is in the stream batch's buffer (a skipped input may take the newest one over). */
interface TagSlot {
  tag: unknown;
}

/** Salt so the filter's coin and the initial noise never share a random stream for the same seed. */
const FILTER_SEED_SALT = 0x5f3759df;

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const sameSize = (a: Size, b: Size) => a.width === b.width && a.height === b.height;

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
  /** The size the stream batch was built for (a new one resets the filter). */
  private batchSize: Size | undefined;
  /** The shape (width / height) of the latest input frame: the size follows it when the parameters set none. */
  private inputAspect: number | undefined;
  /** Updates queued that build a new UNet variant (see buildsVariant). */
  private variantBuilds = 0;
  /** Frames entering (loaded, filtered) and updates applying take turns here. */
  private turn: Promise<unknown> = Promise.resolve();
  /** Tags of the frames in the stream batch's buffer, oldest first (the first frame fills it when priming). */
  private inFlightTags: TagSlot[] = [];
  /** The tag of the newest frame that ran the models. */
  private newest: TagSlot | undefined;
  private closed = false;
  /**
   * Frames running per merged-variant lease (a plan's release; a resized plan shares its plan's): an update can
   * replace the plan while frames still run on the old one.
   */
  private readonly running = new Map<Plan['release'], number>();
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
    stream.plan = await planRequest(engine, params, mode, runners, defaults, 'stream');
    stream.own = stream.plan.params;
    stream.rebuild();
    return stream;
  }

  /** The stream's own parameters (without the load valve's overrides). */
  get params(): GenerationParams {
    return this.own;
  }

  /** The size the next frame runs at. */
  get frameSize(): Size {
    return this.plan.size;
  }

  /** Frames an output lags its input (steps - 1). */
  get lag(): number {
    return this.plan.coefficients.timesteps.length - 1;
  }

  /** Where the stream's plan differs from its parameters (guidance brought into the pack's range ...). */
  get notes(): readonly string[] {
    return this.plan.notes;
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
   * the frames that arrived before the update have entered). Validation errors throw and change nothing. A new
   * variant (an adapter merge) is built first, with frames flowing on the current UNet meanwhile.
   */
  update(update: unknown, when: Promise<unknown> = Promise.resolve()): Promise<GenerationParams> {
    const build = this.buildsVariant(update);
    if (build) this.variantBuilds++;
    // the valve's overrides stay laid over the stream's new parameters
    const run = this.updates.then(() => this.applyUpdate(mergeParams(this.own, update), this.overrides, when)).finally(() => build && this.variantBuilds--);
    this.updates = run.catch(() => undefined);
    return run;
  }

  /**
   * Lays the load valve's parameters over the stream's own from the next frame on ({} restores the stream's
   * plan), the way an update would; the stream's own parameters stay as they are.
   */
  degrade(overrides: Partial<GenerationParams>): Promise<GenerationParams> {
    const run = this.updates.then(() => this.applyUpdate(this.own, overrides, Promise.resolve()));
    this.updates = run.catch(() => undefined);
    return run;
  }

  private async applyUpdate(own: GenerationParams, overrides: Partial<GenerationParams>, when: Promise<unknown>): Promise<GenerationParams> {
    // 1. plan the new parameters completely first: if any part fails, the stream keeps its old plan
    const planned = Object.keys(overrides).length === 0 ? own : mergeParams(own, overrides);
    const next = await planRequest(this.engine, planned, this.plan.mode, this.runners, this.planDefaults(), 'stream');
    // 2. apply between frames, once the caller's turn has come; a plan never applied (the stream closed, the turn
    //    failed) lets its variant go
    let applied = false;
    try {
      await when;
      return await this.inTurn(() => {
        if (this.closed) return own;
        applied = true;
        this.apply(next);
        this.own = own;
        this.overrides = overrides;
        return own;
      });
    } finally {
      if (!applied) next.release();
    }
  }

  private apply(planned: Plan): GenerationParams {
    // the input's shape may have changed while the update was planned
    const size = this.engine.size(planned.params, this.inputAspect);
    const next = sameSize(size, planned.size) ? planned : resizePlan(this.engine, planned, size, this.runners);
    const before = this.plan;
    this.plan = next;
    this.retire(before);
    const p = next.params;
    this.filter.config = { threshold: p.similarity_threshold, maxSkipFrames: p.max_skip_frames };
    // a new size or schedule re-primes the buffer; prompt, variant and guidance apply to the frames in flight
    if (!sameSize(before.size, next.size) || !same(before.coefficients.timesteps, next.coefficients.timesteps) || before.params.frame_buffer_size !== p.frame_buffer_size) {
      this.rebuild();
      return p;
    }
    // made when the next step starts: a step in progress keeps the guidance it planned its rows with
    if (!same(before.guidance, next.guidance)) this.pending.guidance = next.guidance;
    if (!same(before.params.seed, p.seed)) this.pending.noise = this.noise();
    return p;
  }

  /** The defaults a plan of this stream fills unset parameters from, with the input's current shape. */
  private planDefaults(): PlanDefaults {
    return { ...this.defaults, inputAspect: this.inputAspect };
  }

  private inTurn<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.turn.then(fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Whether the pipeline takes another frame now (fewer than PIPELINE_DEPTH in flight). */
  get hasRoom(): boolean {
    return this.inFlight < PIPELINE_DEPTH;
  }

  /** Resolves when the pipeline takes another frame (see hasRoom). */
  room(): Promise<void> {
    if (this.hasRoom) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /**
   * Processes one input frame that `load` produces at the stream's size when its turn comes. `aspect` is the
   * input's shape (width / height): when the parameters fix no size the stream follows it (a new size re-primes
   * the buffer). `entered` settles once the frame is in the pipeline (frames enter in call order; a load error
   * rejects both); `results` as process(). `handOver` as process().
   */
  processInput<Tag>(load: FrameLoader, tag: Tag, aspect?: number, handOver = false, timing: Omit<Urgency, 'class'> = {}): FrameEntry<Tag> {
    const turn = this.inTurn(async () => {
      if (aspect !== undefined && aspect !== this.inputAspect) this.followAspect(aspect);
      const frame = await load(this.plan.size, this.plan.params.fit);
      // wrapped: the turn ends when the frame has entered, not when its results are ready
      return { results: this.process([frame], tag, handOver, timing) };
    });
    return { entered: turn.then(() => undefined), results: turn.then((t) => t.results) };
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
        // the newest frame in flight is the one this input was compared with: it now stands for this input
        if (this.newest) this.newest.tag = tag;
        return this.inOrder(last.then((results) => results.map((r) => frameResult({ ...r, source: tag, skipped: true, similarity: decision.similarity }))));
      }
    }
    this.inFlight++;
    const letGo = this.hold(entered); // a step of a replaced batch runs on the plan the frame entered with
    const slot: TagSlot = { tag };
    this.newest = slot;
    // 2. encode now, beside the previous frame's step
    const latents = this.engine.encodeImages(frames, size, vae, handOver);
    // 3. one stream-batch step after another
    const step = this.steps.then(async () => {
      const z = await latents;
      return this.holding(this.stepPlan(batch, entered), async ({ prompt, runner, variant }) => {
        const source = this.trackSource(batch, slot) as Tag | undefined;
        return { source, variant, denoised: await batch.process(z, prompt, runner) };
      });
    });
    step.then(letGo, letGo);
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
    const letGo = this.hold(entered);
    const step = this.steps.then(() =>
      this.holding(this.stepPlan(batch, entered), async ({ prompt, runner, variant }) => ({ variant, denoised: await batch.process(zeros, prompt, runner) })),
    );
    step.then(letGo, letGo);
    this.steps = step.catch(() => undefined);
    const { variant, denoised } = await step;
    const images = await this.engine.decodeToRgb8(denoised, size, vae);
    return images.map((rgb) => frameResult({ source: undefined, rgb, width: size.width, height: size.height, skipped: false, similarity: undefined, variant, vae: vaeName, steps: batch.lag + 1 }));
  }

  /**
   * Holds `plan` (its merged UNet lease) until the returned function is called: a plan an update replaced is
   * released when its last holder lets go.
   */
  private hold(plan: Plan): () => void {
    const lease = plan.release;
    this.running.set(lease, (this.running.get(lease) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const n = (this.running.get(lease) ?? 1) - 1;
      if (n > 0) this.running.set(lease, n);
      else {
        this.running.delete(lease);
        if (lease !== this.plan.release || this.closed) lease();
      }
    };
  }

  /** Runs `work` on `plan`, held while the work runs (an update may replace it meanwhile). */
  private async holding<T>(plan: Plan, work: (plan: Plan) => Promise<T>): Promise<T> {
    const letGo = this.hold(plan);
    try {
      return await work(plan);
    } finally {
      letGo();
    }
  }

  /** A plan an update replaced: released now, or when the last frame holding it is done. */
  private retire(plan: Plan): void {
    if (!this.running.has(plan.release)) plan.release();
  }

  /** Ends the stream: the plan's hold on its UNet variant is given back. Updates still planning are released when done. */
  close(): void {
    this.closed = true;
    this.retire(this.plan);
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

  private trackSource(batch: StreamBatch, slot: TagSlot): unknown {
    if (batch.inFlight === 0) this.inFlightTags = new Array<TagSlot>(batch.lag).fill(slot); // priming repeats the first frame
    this.inFlightTags.push(slot);
    return this.inFlightTags.shift()!.tag;
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
    this.pending = {};
    this.last = undefined;
    this.newest = undefined;
  }
}

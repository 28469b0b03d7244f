/**
 * One client's stream: its own pipeline (buffer, noise, stock noise, filter state), a latest-frame-wins
 * input slot, and credit-based output. Nothing here queues without bound: at most one input waits (newer
 * frames replace it), at most MAX_WAITING_UPDATES updates wait for their turn, and at most one output waits
 * for credit (newer outputs replace it). Frames and updates take their turns in the order they arrived.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { decodeRgb8, encodeRgb8, probeImage, type Fit } from '../../pipelines/codecs/image.ts';
import { StreamPipeline, type FrameEntry, type FrameResult } from '../../pipelines/stream-pipeline.ts';
import type { Engine } from '../../pipelines/engine.ts';
import { mergeParams, packParams, parseRequestParams, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { errorMessage, type ClientMessage, type FrameMeta, type StartMessage } from './protocol.ts';
import { StreamTargets } from './targets.ts';
import { ladder, LoadValve, type ValveOptions } from '../../pipelines/load-valve.ts';
import type { Reservation } from './registry.ts';

export interface SentFrame {
  readonly meta: FrameMeta;
  readonly bytes: Buffer;
}

/** Where a session sends things; the WebSocket handler implements it. */
export interface StreamSink {
  sendJson(message: object): void;
  sendFrame(frame: SentFrame): void;
  /** Bytes queued in the socket and not yet written: output is held back above a limit. */
  readonly bufferedAmount: number;
  /**
   * False when the sink takes no encoded bytes (a WebRTC stream sends the `output` event's raw image):
   * `sendFrame` then gets the metadata with empty bytes, and no image is encoded for it. Default true.
   */
  readonly encoded?: boolean;
}

/** The `output` event: each output frame as raw pixels, for transports that encode it themselves (WebRTC). */
export interface RawOutput {
  /** RGB bytes [H, W, 3]; the same array again when the similarity filter repeats a frame. */
  readonly rgb: Uint8Array;
  readonly width: number;
  readonly height: number;
  /** performance.now() when the shown input frame arrived (ms): output timing follows the input's. */
  readonly arrivedAt: number;
  readonly meta: FrameMeta;
}

export interface StreamStats {
  framesIn: number;
  framesOut: number;
  droppedInput: number;
  droppedOutput: number;
  skipped: number;
  errors: number;
}

/**
 * A live stream runs one frame per UNet call: grouping frames (frame_buffer_size > 1) would hold each frame
 * back until its group is full, against latest-frame-wins. Grouping is for in-process and batch use.
 */
function checkLive(frameBufferSize: unknown): void {
  if (frameBufferSize !== undefined && frameBufferSize !== 1) {
    throw new ServiceError('bad_request', 'frame_buffer_size: live streams process one frame per call (1)', { field: 'frame_buffer_size' });
  }
}

/** Bytes a socket may hold unsent before outputs wait (about a second of 720p JPEG). */
const MAX_SOCKET_BUFFER = 2 * 1024 * 1024;
/**
 * Updates a stream may have not answered yet (waiting for their turn behind frames, or building an adapter
 * merge); more are refused (rate_limited) until `updated` answers.
 */
export const MAX_WAITING_UPDATES = 16;

/** The latent area a stream with these parameters uses (what the registry admits by). */
export function streamArea(engine: Engine, params: Pick<GenerationParams, 'width' | 'height' | 'frame_buffer_size'>): number {
  const size = engine.size(params);
  return size.latentWidth * size.latentHeight * params.frame_buffer_size;
}


/** Interleaved RGB bytes [H, W, 3] of a decoded frame (onRawFrame). */
interface RawInput {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

interface PendingInput {
  readonly id: number;
  /** An encoded image (JPEG/PNG/WebP), or interleaved RGB already at the stream's size (onRawFrame). */
  readonly bytes: Buffer | undefined;
  readonly rgb: RawInput | undefined;
  readonly receivedAt: number;
}

/** A raw frame made for a size the stream no longer runs at. */
class StaleFrame extends Error {}

/** What waits for the pipeline, in arrival order: at most one frame, and updates that hold frames back. */
type Work = { readonly kind: 'frame'; readonly input: PendingInput } | { readonly kind: 'update'; readonly turn: () => void; readonly done: Promise<unknown> };

export class StreamSession extends EventEmitter {
  readonly id = randomUUID();
  readonly stats: StreamStats = { framesIn: 0, framesOut: 0, droppedInput: 0, droppedOutput: 0, skipped: 0, errors: 0 };
  private credits: number;
  private queue: Work[] = [];
  private held: SentFrame | undefined;
  private busy = false;
  private closed = false;
  /** A txt2img stream that failed: it makes no more frames (but stays open until the client goes). */
  private stopped = false;
  private inputCounter = 0;
  private outputCounter = 0;
  private lastJpeg: Buffer | undefined;
  /** The latest output's pixels, and those lastJpeg was made from (a snapshot encodes a newer one on demand). */
  private lastFrame: { rgb: Uint8Array; width: number; height: number } | undefined;
  private lastJpegOf: Uint8Array | undefined;
  private readonly arrivals = new Map<number, number>();
  /** Settles once the newest frame in the pipeline has its output queued (or its error sent). */
  private handled: Promise<void> = Promise.resolve();
  /** Output encoding runs beside the next frame's pipeline work; this chain keeps outputs in order. */
  private outputs: Promise<void> = Promise.resolve();
  private updatesWaiting = 0;
  /** The parameters the updates accepted so far ask for (for the latent area), while any is waiting. */
  private requested: GenerationParams | undefined;
  /** Frame rate and latency targets: each frame's deadline for the model calls. */
  readonly targets: StreamTargets;
  /** Degrades the stream's plan when its frames miss their deadline, restores it when load falls. */
  readonly valve: LoadValve;
  private valveOptions: ValveOptions;

  private constructor(
    private readonly ctx: AppContext,
    private readonly pipeline: StreamPipeline,
    private readonly sink: StreamSink,
    readonly start: StartMessage,
    private readonly reservation: Reservation | undefined,
  ) {
    super();
    this.credits = start.window;
    this.targets = new StreamTargets(start);
    this.valveOptions = { degrade: start.degrade ?? true, minBudget: start.min_budget ?? 0 };
    this.valve = new LoadValve(this.rungs());
  }

  /** Opens a stream; `reservation` (the registry's) is resized before a size change and must fit. */
  static async open(ctx: AppContext, start: StartMessage, sink: StreamSink, reservation?: Reservation): Promise<StreamSession> {
    const params = parseRequestParams({ ...start.params }, packParams(ctx.engine.pack.defaults, 'stream'));
    checkLive(params.frame_buffer_size);
    const pipeline = await StreamPipeline.create(ctx.engine, params, ctx.runners, start.mode, ctx.defaults.live);
    const session = new StreamSession(ctx, pipeline, sink, start, reservation);
    try {
      ctx.capacity.admit(start.target_fps, session.bottomUnits()); // refused: close 1013 with the reason
    } catch (error) {
      pipeline.close(); // its plan's hold on a merged UNet
      throw error;
    }
    if (start.mode === 'txt2img') queueMicrotask(() => void session.pump());
    return session;
  }

  get params(): GenerationParams {
    return this.pipeline.params;
  }

  /** Where the stream differs from its parameters, in words (guidance brought into the model's range ...). */
  get notes(): readonly string[] {
    return this.pipeline.notes;
  }

  get size(): { width: number; height: number } {
    return this.pipeline.frameSize;
  }

  /** The latest output as JPEG (MJPEG and snapshots), if any. */
  get latestJpeg(): Buffer | undefined {
    return this.lastJpeg;
  }

  /**
   * The latest output as JPEG for a snapshot: encoded from the latest frame when no JPEG was made for it (a
   * stream whose transport encodes video itself, WebRTC, makes JPEGs only while an MJPEG viewer watches).
   */
  async snapshot(): Promise<Buffer | undefined> {
    const frame = this.lastFrame;
    if (frame && this.lastJpegOf !== frame.rgb) {
      this.lastJpeg = await encodeRgb8(frame.rgb, frame.width, frame.height, 'jpeg', this.start.output.quality);
      this.lastJpegOf = frame.rgb;
    }
    return this.lastJpeg;
  }

  /** The stream's name for stable output URLs (`name` in start), if it has one. */
  get name(): string | undefined {
    return this.start.name;
  }

  /** Paths of its MJPEG output and snapshot: the stable by-name ones for a named stream, else its own. */
  get outputPaths(): { mjpeg_url: string; snapshot_url: string } {
    const base = this.name === undefined ? `/v1/streams/${this.id}` : `/v1/streams/by-name/${this.name}`;
    return { mjpeg_url: `${base}/mjpeg`, snapshot_url: `${base}/snapshot` };
  }

  /**
   * A binary frame arrived (at `receivedAt`, performance.now() ms): it replaces any frame still waiting
   * (latest-frame-wins).
   */
  onFrame(bytes: Buffer, receivedAt = performance.now()): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = this.countInput();
    if (bytes.length > this.ctx.config.maxFrameBytes) {
      this.fail(new ServiceError('too_large', `frame ${id} is ${bytes.length} bytes, over the limit of ${this.ctx.config.maxFrameBytes}`), id);
      return;
    }
    this.queueInput({ id, bytes, rgb: undefined, receivedAt });
  }

  /**
   * A decoded frame arrived as interleaved RGB at the stream's size (WebRTC decodes video itself): no image
   * decode, otherwise as onFrame (latest-frame-wins). A frame whose size no longer fits the stream when its
   * turn comes (a live size change) is dropped.
   */
  onRawFrame(rgb: Uint8Array, width: number, height: number): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = this.countInput();
    const size = this.pipeline.frameSize;
    if (width !== size.width || height !== size.height || rgb.length !== width * height * 3) {
      this.fail(new ServiceError('bad_image', `raw frame ${id} is ${width}x${height} (${rgb.length} bytes); the stream takes ${size.width}x${size.height} RGB`), id);
      return;
    }
    this.queueInput({ id, bytes: undefined, rgb: { data: rgb, width, height }, receivedAt: performance.now() });
  }

  private countInput(): number {
    this.stats.framesIn++;
    this.ctx.metrics.framesIn.inc();
    return ++this.inputCounter;
  }

  /** Latest-frame-wins: a frame still waiting is replaced (and counted as dropped). */
  private queueInput(input: PendingInput): void {
    this.targets.arrived(input.receivedAt);
    const waiting = this.queue.findIndex((w) => w.kind === 'frame');
    if (waiting >= 0) {
      this.queue.splice(waiting, 1);
      this.dropInput();
    }
    this.queue.push({ kind: 'frame', input });
    void this.pump();
  }

  /** A frame that was replaced before the stream opened still counts (frame ids count binary messages). */
  onDroppedFrame(): void {
    if (this.closed) return;
    this.inputCounter++;
    this.stats.framesIn++;
    this.ctx.metrics.framesIn.inc();
    this.dropInput();
  }

  private dropInput(): void {
    this.stats.droppedInput++;
    this.ctx.metrics.framesDropped.inc({ reason: 'stale_input' });
  }

  /** The client can take `frames` more outputs. */
  onAck(frames: number): void {
    this.credits = Math.min(this.credits + frames, this.start.window);
    if (this.held) {
      const frame = this.held;
      this.held = undefined;
      this.deliver(frame);
    }
    if (this.start.mode === 'txt2img') void this.pump();
  }

  /**
   * A live parameter change; invalid updates throw and change nothing. It applies to every frame that arrived
   * after it (frames that arrived before it run first), except while a new UNet variant is built (new
   * adapters): frames keep flowing on the old one, and the change applies between frames once it is ready.
   * A stream with MAX_WAITING_UPDATES updates not answered yet is refused more (each may start an adapter
   * merge); a size that needs more latent area must fit the registry's before the update is accepted.
   * New targets and valve settings (if the update gives any) apply with it.
   */
  async update(params: Record<string, unknown>, targets: Partial<Extract<ClientMessage, { type: 'update' }>> = {}): Promise<GenerationParams> {
    if ('frame_buffer_size' in params) checkLive(params['frame_buffer_size']);
    if (this.updatesWaiting >= MAX_WAITING_UPDATES) {
      throw new ServiceError('rate_limited', `${MAX_WAITING_UPDATES} updates are still waiting or being applied: wait for \`updated\` before sending more`, { retryAfter: 1 });
    }
    this.reserveArea(params);
    this.updatesWaiting++;
    try {
      return await this.applyInTurn(params, targets);
    } finally {
      this.updatesWaiting--;
      if (this.updatesWaiting === 0) this.fitArea();
    }
  }

  /**
   * Grows the stream's latent-area reservation to what the updates accepted so far ask for (throws rate_limited,
   * changing nothing, when that does not fit). Parameters that do not parse are left to the update to report.
   */
  private reserveArea(params: Record<string, unknown>): void {
    const reservation = this.reservation;
    if (!reservation) return;
    let requested: GenerationParams;
    let area: number;
    try {
      requested = mergeParams(this.requested ?? this.params, params);
      area = streamArea(this.ctx.engine, requested);
    } catch {
      return;
    }
    if (area > reservation.area) reservation.resize(area);
    this.requested = requested;
  }

  /** With no update waiting, the reservation shrinks to the area the stream runs at (its applied parameters). */
  private fitArea(): void {
    this.requested = undefined;
    const reservation = this.reservation;
    if (!reservation || this.closed) return;
    const area = streamArea(this.ctx.engine, this.params);
    if (area < reservation.area) reservation.resize(area);
  }

  private async applyInTurn(params: Record<string, unknown>, targets: Partial<Extract<ClientMessage, { type: 'update' }>>): Promise<GenerationParams> {
    let done: Promise<GenerationParams>;
    let reached: Promise<void> = Promise.resolve();
    if (this.pipeline.buildsVariant(params)) done = this.pipeline.update(params);
    else {
      let turn!: () => void;
      reached = new Promise<void>((ok) => (turn = ok));
      done = this.pipeline.update(params, reached);
      this.queue.push({ kind: 'update', turn, done });
      void this.pump();
    }
    // the answer (updated or error) follows the answers to the frames that arrived before the update
    const answer = async () => {
      await reached;
      await this.handled;
      await this.outputs;
    };
    try {
      const applied = await done;
      await this.retarget(targets);
      await answer();
      return applied;
    } catch (error) {
      await answer();
      throw error;
    }
  }

  /** New targets and valve settings; the valve's rungs follow the stream's parameters. */
  private async retarget(targets: Partial<Extract<ClientMessage, { type: 'update' }>>): Promise<void> {
    this.targets.update(targets);
    this.valveOptions = { degrade: targets.degrade ?? this.valveOptions.degrade, minBudget: targets.min_budget ?? this.valveOptions.minBudget };
    const level = this.valve.level;
    this.valve.setRungs(this.rungs());
    if (level > 0) await this.pipeline.degrade(this.valve.overrides); // the rungs of the new parameters
  }

  /** Cost units (steps x relative MACs) of one frame at the valve's bottom rung (server/admission.ts). */
  bottomUnits(): number {
    const bottom = this.rungs().at(-1)?.params ?? {};
    const p = this.pipeline.params;
    const steps = bottom.steps ?? p.t_index_list?.length ?? p.steps;
    const budget = bottom.budget;
    const costs = this.expertCosts();
    const macs = typeof budget === 'number' ? Math.max(...costs.filter((c) => c <= budget), Math.min(...costs)) : this.pipeline.variant.relativeMacs;
    return steps * macs;
  }

  private expertCosts(): number[] {
    return this.ctx.engine.variants.experts?.experts.map((e) => e.relativeMacs) ?? [];
  }

  /** The load valve's rungs for the stream's parameters (pipelines/load-valve.ts). */
  private rungs() {
    return ladder(this.pipeline.params, this.expertCosts(), this.valveOptions);
  }

  /** A delivered frame's latency against the budget; a valve move re-plans the stream from the next frame. */
  private judge(latencyMs: number): void {
    const before = this.valve.kind;
    const move = this.valve.observe(latencyMs, this.targets.budget);
    if (!move) return;
    const kind = move === 'down' ? this.valve.kind : before;
    this.ctx.metrics.degradations.inc({ direction: move, kind: kind ?? 'none' });
    this.ctx.log.info('load valve', { stream: this.id, direction: move, kind, level: this.valve.level });
    this.pipeline.degrade(this.valve.overrides).catch((error: unknown) => this.ctx.log.warn('load valve re-plan failed', { stream: this.id, error: String(error) }));
  }

  close(): void {
    if (!this.closed) this.pipeline.close();
    this.closed = true;
    for (const w of this.queue) if (w.kind === 'update') w.turn(); // let waiting updates settle
    this.queue = [];
    this.held = undefined;
    this.emit('close');
    this.removeAllListeners();
  }

  private async pump(): Promise<void> {
    if (this.busy || this.closed) return;
    this.busy = true;
    try {
      while (!this.closed && !this.stopped) {
        const next = this.queue[0];
        if (next?.kind === 'update') {
          this.queue.shift();
          next.turn();
          await next.done.catch(() => undefined); // its error goes to the client with the update's answer
          continue;
        }
        if (this.start.mode === 'txt2img') {
          if (this.credits <= 0 || this.held) break;
          await this.generateOne();
          continue;
        }
        if (!next) break;
        // frames are pipelined: the next one is taken (the newest waiting) once the pipeline has room
        if (!this.pipeline.hasRoom) {
          await this.pipeline.room();
          continue;
        }
        this.queue.shift();
        await this.startOne(next.input);
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * decode (at the size the stream runs at when its turn comes) -> filter -> encode -> denoise -> decode -> frame
   * out. Resolves once the frame is in the pipeline (so frames enter it in arrival order); the rest runs beside
   * the next frames.
   */
  private async startOne(input: PendingInput): Promise<void> {
    const started = performance.now();
    this.arrivals.set(input.id, input.receivedAt);
    const { entered, results } = input.rgb ? this.enterRaw(input, input.rgb) : await this.enterEncoded(input, input.bytes!);
    try {
      await entered;
    } catch (error) {
      results.catch(() => undefined);
      if (error instanceof StaleFrame) this.dropInput(); // the size changed while it waited: the sender's next frame has the new size
      else this.fail(toServiceError(error, 'bad_image'), input.id);
      return;
    }
    this.handled = results.then(
      ([result]) => {
        if (this.closed || !result) return;
        const sourceId = result.source ?? input.id;
        const sourceArrival = this.arrivals.get(sourceId) ?? input.receivedAt;
        for (const id of this.arrivals.keys()) if (id < sourceId) this.arrivals.delete(id);
        if (result.skipped) {
          this.stats.skipped++;
          this.ctx.metrics.ssfSkips.inc();
        }
        this.queueOutput(result, sourceId, sourceArrival, started);
      },
      (error: unknown) => this.fail(toServiceError(error, 'inference_failed'), input.id),
    );
  }

  /** An encoded image: its shape is read first (the stream may follow it), then it is decoded at the stream's size. */
  private async enterEncoded(input: PendingInput, bytes: Buffer): Promise<FrameEntry<number>> {
    let info;
    try {
      info = await probeImage(bytes);
    } catch (error) {
      const failed = Promise.reject(error);
      return { entered: failed, results: failed };
    }
    const load = async (size: { width: number; height: number }, fit: Fit) => (await decodeRgb8(bytes, size.width, size.height, { fit, info })).rgb;
    // a decoded frame is ours to hand over to the encoder's thread
    return this.pipeline.processInput(load, input.id, info.width / info.height, true, this.targets.timing(input.receivedAt));
  }

  /** Raw RGB already at the stream's size (it says nothing about the source's shape); stale after a size change. */
  private enterRaw(input: PendingInput, rgb: RawInput): FrameEntry<number> {
    const load = async (size: { width: number; height: number }) => {
      if (size.width !== rgb.width || size.height !== rgb.height) throw new StaleFrame();
      return rgb.data;
    };
    // a raw frame's buffer belongs to its transport: not handed over
    return this.pipeline.processInput(load, input.id, undefined, false, this.targets.timing(input.receivedAt));
  }

  private async generateOne(): Promise<void> {
    const started = performance.now();
    try {
      const [result] = await this.pipeline.generate(this.targets.current.target_fps !== undefined ? this.targets.timing(started) : {});
      if (this.closed || !result) return;
      this.queueOutput(result, null, started, started);
      await this.outputs; // txt2img paces itself on credits: wait until this output is delivered or held
    } catch (error) {
      this.fail(toServiceError(error, 'inference_failed'), null);
      this.stopped = true; // a txt2img stream that cannot generate would spin: stop it
    }
  }

  private lastEncoded: { rgb: Uint8Array; bytes: Buffer } | undefined;

  private queueOutput(result: FrameResult, inputId: number | null, arrivedAt: number, started: number): void {
    this.outputs = this.outputs
      .then(() => this.emitOutput(result, inputId, arrivedAt, started))
      .catch((error: unknown) => this.fail(toServiceError(error), inputId));
  }

  private async emitOutput(result: FrameResult, inputId: number | null, arrivedAt: number, started: number): Promise<void> {
    const { rgb, width, height, skipped, variant, vae, steps } = result;
    this.lastFrame = { rgb, width, height };
    const { format, quality } = this.start.output;
    // A skipped frame repeats the previous output: reuse its bytes instead of encoding again.
    const encoded = this.sink.encoded !== false;
    const bytes = !encoded ? Buffer.alloc(0) : this.lastEncoded?.rgb === rgb ? this.lastEncoded.bytes : await encodeRgb8(rgb, width, height, format, quality);
    if (encoded) this.lastEncoded = { rgb, bytes };
    if (this.listenerCount('jpeg') > 0 || (format === 'jpeg' && encoded)) {
      this.lastJpeg = format === 'jpeg' && encoded ? bytes : await encodeRgb8(rgb, width, height, 'jpeg', quality);
      this.lastJpegOf = rgb;
      this.emit('jpeg', this.lastJpeg);
    }
    const now = performance.now();
    const meta: FrameMeta = {
      type: 'frame',
      output_id: ++this.outputCounter,
      input_id: inputId,
      latency_ms: Math.round((now - arrivedAt) * 10) / 10,
      processing_ms: Math.round((now - started) * 10) / 10,
      skipped,
      width,
      height,
      format,
      expert: variant.expert,
      steps,
      adapters: variant.adapters,
      vae,
    };
    if (!skipped) {
      this.ctx.metrics.expertFrames.inc({ expert: variant.expert });
      if (inputId !== null) this.ctx.capacity.frameServed(steps, variant.relativeMacs);
    }
    this.ctx.metrics.frameLatency.observe((now - arrivedAt) / 1000);
    if (inputId !== null) {
      if (now - arrivedAt > this.targets.budget) this.ctx.metrics.frameDeadlineMisses.inc();
      this.judge(now - arrivedAt);
    }
    this.ctx.metrics.frameProcessing.observe((now - started) / 1000);
    if (this.listenerCount('output') > 0) this.emit('output', { rgb, width, height, arrivedAt, meta } satisfies RawOutput);
    this.deliver({ meta, bytes });
  }

  /** Sends when the client has credit and the socket is draining; otherwise holds only the newest output. */
  private deliver(frame: SentFrame): void {
    if (this.closed) return;
    if (this.credits > 0 && this.sink.bufferedAmount < MAX_SOCKET_BUFFER) {
      this.credits--;
      this.stats.framesOut++;
      this.ctx.metrics.frameSent();
      this.sink.sendFrame(frame);
      return;
    }
    if (this.held) {
      this.stats.droppedOutput++;
      this.ctx.metrics.framesDropped.inc({ reason: 'no_credit' });
    }
    this.held = frame;
  }

  private fail(error: ServiceError, inputId: number | null): void {
    this.stats.errors++;
    this.ctx.metrics.frameErrors.inc({ code: error.code });
    if (error.status >= 500) this.ctx.log.warn('frame failed', { stream: this.id, code: error.code, error: error.message });
    this.sink.sendJson(errorMessage(error, inputId));
  }
}

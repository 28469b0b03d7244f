/**
 * One client's stream: its own pipeline (buffer, noise, stock noise, filter state), a latest-frame-wins
 * input slot, and credit-based output. Nothing here queues without bound: at most one input waits (newer
 * frames replace it), and at most one output waits for credit (newer outputs replace it).
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { decodeRgb8, encodeRgb8 } from '../../pipelines/codecs/image.ts';
import { StreamPipeline, type FrameResult } from '../../pipelines/stream-pipeline.ts';
import { parseParams, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { errorMessage, type ClientMessage, type FrameMeta, type StartMessage } from './protocol.ts';
import { StreamTargets } from './targets.ts';
import { ladder, LoadValve, type ValveOptions } from '../../pipelines/load-valve.ts';

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

interface PendingInput {
  readonly id: number;
  /** An encoded image (JPEG/PNG/WebP), or interleaved RGB already at the stream's size (onRawFrame). */
  readonly bytes: Buffer | undefined;
  readonly rgb: Uint8Array | undefined;
  readonly receivedAt: number;
}

export class StreamSession extends EventEmitter {
  readonly id = randomUUID();
  readonly stats: StreamStats = { framesIn: 0, framesOut: 0, droppedInput: 0, droppedOutput: 0, skipped: 0, errors: 0 };
  private credits: number;
  private pending: PendingInput | undefined;
  private held: SentFrame | undefined;
  private busy = false;
  private closed = false;
  private inputCounter = 0;
  private outputCounter = 0;
  private lastJpeg: Buffer | undefined;
  private readonly arrivals = new Map<number, number>();
  /** Output encoding runs beside the next frame's pipeline work; this chain keeps outputs in order. */
  private outputs: Promise<void> = Promise.resolve();
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
  ) {
    super();
    this.credits = start.window;
    this.targets = new StreamTargets(start);
    this.valveOptions = { degrade: start.degrade ?? true, minBudget: start.min_budget ?? 0 };
    this.valve = new LoadValve(this.rungs());
  }

  static async open(ctx: AppContext, start: StartMessage, sink: StreamSink): Promise<StreamSession> {
    const params = parseParams({ ...start.params });
    checkLive(params.frame_buffer_size);
    const pipeline = await StreamPipeline.create(ctx.engine, params, ctx.runners, start.mode, ctx.defaults.live);
    const session = new StreamSession(ctx, pipeline, sink, start);
    ctx.capacity.admit(start.target_fps, session.bottomUnits()); // refused: close 1013 with the reason
    if (start.mode === 'txt2img') queueMicrotask(() => void session.pump());
    return session;
  }

  get params(): GenerationParams {
    return this.pipeline.params;
  }

  get size(): { width: number; height: number } {
    return this.pipeline.frameSize;
  }

  /** The latest output as JPEG (MJPEG and snapshots), if any. */
  get latestJpeg(): Buffer | undefined {
    return this.lastJpeg;
  }

  /** A binary frame arrived: it replaces any frame still waiting (latest-frame-wins). */
  onFrame(bytes: Buffer): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = this.countInput();
    if (bytes.length > this.ctx.config.maxFrameBytes) {
      this.fail(new ServiceError('too_large', `frame ${id} is ${bytes.length} bytes, over the limit of ${this.ctx.config.maxFrameBytes}`), id);
      return;
    }
    this.queueInput({ id, bytes, rgb: undefined, receivedAt: performance.now() });
  }

  /**
   * A decoded frame arrived as interleaved RGB at the stream's size (WebRTC decodes video itself): no image
   * decode, otherwise as onFrame (latest-frame-wins).
   */
  onRawFrame(rgb: Uint8Array, width: number, height: number): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = this.countInput();
    const size = this.pipeline.frameSize;
    if (width !== size.width || height !== size.height || rgb.length !== width * height * 3) {
      this.fail(new ServiceError('bad_image', `raw frame ${id} is ${width}x${height} (${rgb.length} bytes); the stream takes ${size.width}x${size.height} RGB`), id);
      return;
    }
    this.queueInput({ id, bytes: undefined, rgb, receivedAt: performance.now() });
  }

  private countInput(): number {
    this.stats.framesIn++;
    this.ctx.metrics.framesIn.inc();
    return ++this.inputCounter;
  }

  private queueInput(input: PendingInput): void {
    this.targets.arrived(input.receivedAt);
    if (this.pending) {
      this.stats.droppedInput++;
      this.ctx.metrics.framesDropped.inc({ reason: 'stale_input' });
    }
    this.pending = input;
    void this.pump();
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

  /** A live parameter change (and new targets, if the update gives any); invalid updates throw and change nothing. */
  async update(params: Record<string, unknown>, targets: Partial<Extract<ClientMessage, { type: 'update' }>> = {}): Promise<GenerationParams> {
    if ('frame_buffer_size' in params) checkLive(params['frame_buffer_size']);
    const next = await this.pipeline.update(params);
    this.targets.update(targets);
    this.valveOptions = { degrade: targets.degrade ?? this.valveOptions.degrade, minBudget: targets.min_budget ?? this.valveOptions.minBudget };
    const level = this.valve.level;
    this.valve.setRungs(this.rungs());
    if (level > 0) await this.pipeline.degrade(this.valve.overrides); // the rungs of the new parameters
    return next;
  }

  /** Cost units (steps x relative MACs) of one frame at the valve's bottom rung (server/admission.ts). */
  bottomUnits(): number {
    const bottom = this.rungs().at(-1)?.params ?? {};
    const p = this.pipeline.params;
    const steps = bottom.steps ?? p.t_index_list?.length ?? p.steps;
    const budget = bottom.budget;
    const costs = this.ctx.engine.variants.experts?.experts.map((e) => e.relativeMacs) ?? [];
    const macs = typeof budget === 'number' ? Math.max(...costs.filter((c) => c <= budget), Math.min(...costs)) : this.pipeline.variant.relativeMacs;
    return steps * macs;
  }

  /** The load valve's rungs for the stream's parameters (pipelines/load-valve.ts). */
  private rungs() {
    const costs = this.ctx.engine.variants.experts?.experts.map((e) => e.relativeMacs) ?? [];
    return ladder(this.pipeline.params, costs, this.valveOptions);
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
    this.closed = true;
    this.pending = undefined;
    this.held = undefined;
    this.emit('close');
    this.removeAllListeners();
  }

  private async pump(): Promise<void> {
    if (this.busy || this.closed) return;
    this.busy = true;
    try {
      while (!this.closed) {
        if (this.start.mode === 'txt2img') {
          if (this.credits <= 0 || this.held) break;
          await this.generateOne();
          continue;
        }
        // frames are pipelined: the next one is taken (the newest waiting) once the pipeline has room
        await this.pipeline.room();
        const input = this.pending;
        if (!input || this.closed) break;
        this.pending = undefined;
        await this.startOne(input);
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * decode -> filter -> encode -> denoise -> decode -> frame out. Resolves once the frame is in the pipeline (so
   * frames enter it in arrival order); the rest runs beside the next frames.
   */
  private async startOne(input: PendingInput): Promise<void> {
    const started = performance.now();
    let rgb: Uint8Array;
    try {
      const { width, height } = this.pipeline.frameSize;
      rgb = input.rgb ?? (await decodeRgb8(input.bytes ?? Buffer.alloc(0), width, height)).rgb;
    } catch (error) {
      this.fail(toServiceError(error, 'bad_image'), input.id);
      return;
    }
    if (this.closed) return;
    this.arrivals.set(input.id, input.receivedAt);
    // a decoded frame is ours to hand over; a raw frame's buffer belongs to its transport
    this.pipeline.process([rgb], input.id, input.rgb === undefined, this.targets.timing(input.receivedAt)).then(
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

  private async generateOne(): Promise<void> {
    const started = performance.now();
    try {
      const [result] = await this.pipeline.generate(this.targets.current.target_fps !== undefined ? this.targets.timing(started) : {});
      if (this.closed || !result) return;
      this.queueOutput(result, null, started, started);
      await this.outputs; // txt2img paces itself on credits: wait until this output is delivered or held
    } catch (error) {
      this.fail(toServiceError(error, 'inference_failed'), null);
      this.closed = true; // a txt2img stream that cannot generate would spin: stop it
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
    const { format, quality } = this.start.output;
    // A skipped frame repeats the previous output: reuse its bytes instead of encoding again.
    const encoded = this.sink.encoded !== false;
    const bytes = !encoded ? Buffer.alloc(0) : this.lastEncoded?.rgb === rgb ? this.lastEncoded.bytes : await encodeRgb8(rgb, width, height, format, quality);
    if (encoded) this.lastEncoded = { rgb, bytes };
    if (this.listenerCount('jpeg') > 0 || (format === 'jpeg' && encoded)) {
      this.lastJpeg = format === 'jpeg' && encoded ? bytes : await encodeRgb8(rgb, width, height, 'jpeg', quality);
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

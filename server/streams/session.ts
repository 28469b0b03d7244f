/**
 * One client's stream: its own pipeline (buffer, noise, stock noise, filter state), a latest-frame-wins
 * input slot, and credit-based output. Nothing here queues without bound: at most one input waits (newer
 * frames replace it), at most MAX_UPDATES_WAITING updates wait for their turn, and at most one output waits
 * for credit (newer outputs replace it). Frames and updates take their turns in the order they arrived.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { decodeImage, encodeImage, probeImage, type Fit } from '../../pipelines/codecs/image.ts';
import { StreamPipeline, type FrameResult } from '../../pipelines/stream-pipeline.ts';
import { parseParams, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { errorMessage, type FrameMeta, type StartMessage } from './protocol.ts';

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

/** Updates that may wait for their turn behind a frame (a client sending more is told to slow down). */
const MAX_UPDATES_WAITING = 16;

interface PendingInput {
  readonly id: number;
  readonly bytes: Buffer;
  readonly receivedAt: number;
}

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
  private inputCounter = 0;
  private outputCounter = 0;
  private lastJpeg: Buffer | undefined;
  private readonly arrivals = new Map<number, number>();
  /** Output encoding runs beside the next frame's pipeline work; this chain keeps outputs in order. */
  private outputs: Promise<void> = Promise.resolve();

  private constructor(
    private readonly ctx: AppContext,
    private readonly pipeline: StreamPipeline,
    private readonly sink: StreamSink,
    readonly start: StartMessage,
  ) {
    super();
    this.credits = start.window;
  }

  static async open(ctx: AppContext, start: StartMessage, sink: StreamSink): Promise<StreamSession> {
    const params = parseParams({ ...start.params });
    checkLive(params.frame_buffer_size);
    const pipeline = await StreamPipeline.create(ctx.engine, params, ctx.runners, start.mode);
    const session = new StreamSession(ctx, pipeline, sink, start);
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

  /** The stream's name for stable output URLs (`name` in start), if it has one. */
  get name(): string | undefined {
    return this.start.name;
  }

  /**
   * A binary frame arrived (at `receivedAt`, performance.now() ms): it replaces any frame still waiting
   * (latest-frame-wins).
   */
  onFrame(bytes: Buffer, receivedAt = performance.now()): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = ++this.inputCounter;
    this.stats.framesIn++;
    this.ctx.metrics.framesIn.inc();
    if (bytes.length > this.ctx.config.maxFrameBytes) {
      this.fail(new ServiceError('too_large', `frame ${id} is ${bytes.length} bytes, over the limit of ${this.ctx.config.maxFrameBytes}`), id);
      return;
    }
    const waiting = this.queue.findIndex((w) => w.kind === 'frame');
    if (waiting >= 0) {
      this.queue.splice(waiting, 1);
      this.dropInput();
    }
    this.queue.push({ kind: 'frame', input: { id, bytes, receivedAt } });
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
   */
  async update(params: Record<string, unknown>): Promise<GenerationParams> {
    if ('frame_buffer_size' in params) checkLive(params['frame_buffer_size']);
    let done: Promise<GenerationParams>;
    let reached: Promise<void> = Promise.resolve();
    if (this.pipeline.buildsVariant(params)) done = this.pipeline.update(params);
    else {
      if (this.queue.filter((w) => w.kind === 'update').length >= MAX_UPDATES_WAITING) {
        throw new ServiceError('rate_limited', `more than ${MAX_UPDATES_WAITING} updates wait for their turn: wait for \`updated\` before sending more`);
      }
      let turn!: () => void;
      reached = new Promise<void>((ok) => (turn = ok));
      done = this.pipeline.update(params, reached);
      this.queue.push({ kind: 'update', turn, done });
      void this.pump();
    }
    // the answer (updated or error) follows the answers to the frames that arrived before the update
    const answer = async () => {
      await reached;
      await this.outputs;
    };
    try {
      const applied = await done;
      await answer();
      return applied;
    } catch (error) {
      await answer();
      throw error;
    }
  }

  close(): void {
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
      while (!this.closed) {
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
        this.queue.shift();
        await this.processOne(next.input);
      }
    } finally {
      this.busy = false;
    }
  }

  private async processOne(input: PendingInput): Promise<void> {
    const started = performance.now();
    try {
      // decode (at the size the stream runs at when its turn comes) -> filter -> encode -> denoise -> decode -> frame out
      const info = await probeImage(input.bytes);
      this.arrivals.set(input.id, input.receivedAt);
      const load = async (size: { width: number; height: number }, fit: Fit) => (await decodeImage(input.bytes, size.width, size.height, { fit, info })).data;
      const [result] = await this.pipeline.processInput(load, input.id, info.width / info.height);
      if (this.closed || !result) return;
      const sourceId = result.source ?? input.id;
      const sourceArrival = this.arrivals.get(sourceId) ?? input.receivedAt;
      for (const id of this.arrivals.keys()) if (id < sourceId) this.arrivals.delete(id);
      if (result.skipped) {
        this.stats.skipped++;
        this.ctx.metrics.ssfSkips.inc();
      }
      this.queueOutput(result, sourceId, sourceArrival, started);
    } catch (error) {
      this.fail(toServiceError(error, 'inference_failed'), input.id);
    }
  }

  private async generateOne(): Promise<void> {
    const started = performance.now();
    try {
      const [result] = await this.pipeline.generate();
      if (this.closed || !result) return;
      this.queueOutput(result, null, started, started);
      await this.outputs; // txt2img paces itself on credits: wait until this output is delivered or held
    } catch (error) {
      this.fail(toServiceError(error, 'inference_failed'), null);
      this.closed = true; // a txt2img stream that cannot generate would spin: stop it
    }
  }

  private lastEncoded: { image: Float32Array; bytes: Buffer } | undefined;

  private queueOutput(result: FrameResult, inputId: number | null, arrivedAt: number, started: number): void {
    this.outputs = this.outputs
      .then(() => this.emitOutput(result, inputId, arrivedAt, started))
      .catch((error: unknown) => this.fail(toServiceError(error), inputId));
  }

  private async emitOutput(result: FrameResult, inputId: number | null, arrivedAt: number, started: number): Promise<void> {
    const { image, width, height, skipped, variant } = result;
    const { format, quality } = this.start.output;
    // A skipped frame repeats the previous output: reuse its bytes instead of encoding again.
    const bytes = this.lastEncoded?.image === image ? this.lastEncoded.bytes : await encodeImage(image, width, height, format, quality);
    this.lastEncoded = { image, bytes };
    if (this.listenerCount('jpeg') > 0 || format === 'jpeg') {
      this.lastJpeg = format === 'jpeg' ? bytes : await encodeImage(image, width, height, 'jpeg', quality);
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
      adapters: variant.adapters,
    };
    if (!skipped) this.ctx.metrics.expertFrames.inc({ expert: variant.expert });
    this.ctx.metrics.frameLatency.observe((now - arrivedAt) / 1000);
    this.ctx.metrics.frameProcessing.observe((now - started) / 1000);
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

/**
 * A gateway's live streams: the client's WebSocket stays on the gateway, and the gateway relays the stream,
 * frames and messages both ways, to a worker chosen by placement.ts. Relaying (rather than handing the client
 * the worker's address) keeps one public address with its key and origin rules, keeps workers on a private
 * network, and lets a stream move to another worker without the client noticing: when its worker dies (its
 * socket closes, or its heartbeat stops) or drains, the gateway starts the stream again on another worker with
 * the stream's current parameters and its newest input frame. The new worker re-primes its buffer; frames that
 * were in the dead worker's buffer are dropped and counted (stats.droppedInFlight).
 *
 * The gateway is also where flow control meets the client (client-output.ts), and its MJPEG, snapshot, push
 * and WHEP outputs are served from the outputs that pass through.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import type { WebSocket } from 'ws';
import { adapterKey } from '../../models/adapters/choices.ts';
import { ServiceError } from '../../models/errors.ts';
import { parseParams, type GenerationParams } from '../../pipelines/params.ts';
import type { AppContext } from '../context.ts';
import { CLOSE, PROTOCOL_VERSION, errorMessage, parseClientMessage, type FrameMeta, type StartMessage } from '../streams/protocol.ts';
import type { RawOutput, StreamStats } from '../streams/session.ts';
import { ClientOutput } from './client-output.ts';
import { SentFrames } from './sent-frames.ts';
import type { ClusterMetrics } from './metrics.ts';
import type { NodeInfo } from './nodes.ts';
import type { StreamNeeds } from './placement.ts';
import type { StreamEntry } from './stream-directory.ts';
import { Upstream, type Message } from './upstream.ts';

/** A stream waits this long for a worker with room (none alive, all full) before it gives up, ms. */
const PLACEMENT_TIMEOUT_MS = 10_000;
const PLACEMENT_RETRY_MS = 100;
/** A worker that refused or lost a stream is not asked again for this long, ms. */
const EXCLUDE_MS = 5000;
/** Close codes of a start the worker refused for the request's sake: moving elsewhere would not help. */
const FINAL_START_CODES: ReadonlySet<number> = new Set([CLOSE.badStart, CLOSE.policy, CLOSE.tooBig]);

/** A relayed stream's counters: a local session's, and how often it moved and what that cost. */
export interface RelayStats extends StreamStats {
  failovers: number;
  /** Input frames that were in a worker's buffer when it died or drained. */
  droppedInFlight: number;
}

/** What a relayed stream needs from its gateway. */
export interface RelayDeps {
  readonly ctx: AppContext;
  readonly metrics: ClusterMetrics;
  /**
   * A worker for the stream (its needs, skipping the workers it excludes), set as its `target` in the same
   * step; undefined when none has room.
   */
  place(stream: RelayedStream): Promise<NodeInfo | undefined>;
  /** The stream's place changed (started, moved, ended: undefined). */
  publish(stream: RelayedStream, entry: StreamEntry | undefined): void;
  /** Claims the stream's name across the cluster; false when a stream on any gateway has it. */
  claimName(name: string, stream: RelayedStream): Promise<boolean>;
  readonly self: { readonly id: string; readonly url: string };
}

export class RelayedStream extends EventEmitter {
  readonly id = randomUUID();
  /** Its stable URLs' name (/v1/streams/by-name/NAME/...), unique across the cluster; served by its gateway. */
  readonly name: string | undefined;
  readonly stats: RelayStats = { framesIn: 0, framesOut: 0, droppedInput: 0, droppedOutput: 0, skipped: 0, errors: 0, failovers: 0, droppedInFlight: 0 };
  params: GenerationParams;
  size = { width: 0, height: 0 };
  /** The worker it runs on or is being started on (counted as that worker's load by placement). */
  target: NodeInfo | undefined;
  readonly needs: StreamNeeds;
  private lastJpeg: Buffer | undefined;
  /** The latest output as the worker sent it (the stream's format), and the one lastJpeg shows. */
  private lastOutput: Buffer | undefined;
  private lastJpegOf: Buffer | undefined;
  private readonly startedAt = new Date().toISOString();
  private upstream: Upstream | undefined;
  /** The upstream answered `started`: frames and messages go to it. */
  private live = false;
  /** The client got its `started`. */
  private announced = false;
  private stopping = false;
  private closed = false;
  private readonly excluded = new Map<string, number>();
  /** Frames sent to the current worker. */
  private sent = new SentFrames();
  /** The client id of the last frame an output showed. */
  private lastShown = 0;
  private inputCounter = 0;
  private outputCounter = 0;
  private readonly arrivals = new Map<number, number>();
  private newest: { id: number; bytes: Buffer } | undefined;
  /** Client messages waiting for an upstream (while it moves), in order. */
  private held: string[] = [];
  /** Updates sent upstream and not yet answered (sent again if the worker dies first). */
  private unanswered: string[] = [];
  private readonly output: ClientOutput;
  /** performance.now() when the current move began (until the first output after it). */
  private movingSince: number | undefined;
  /** An error a worker sent while refusing the start: the client's if the refusal is final. */
  private refusal: Message | undefined;
  /** Outputs being prepared for the gateway's viewers (kept in order). */
  private viewers: Promise<void> = Promise.resolve();

  constructor(
    private readonly ws: WebSocket,
    readonly start: StartMessage,
    private readonly deps: RelayDeps,
  ) {
    super();
    this.params = parseParams({ ...start.params });
    this.name = start.name;
    this.needs = { pack: deps.ctx.engine.pack.name, adapters: adapterKey(this.params.adapters) };
    this.output = new ClientOutput(ws, start.window, this.stats, deps.ctx.metrics);
  }

  get latestJpeg(): Buffer | undefined {
    return this.lastJpeg;
  }

  /** The latest output as JPEG for a snapshot: a PNG/WebP stream's newest output re-encoded when no viewer made it. */
  async snapshot(): Promise<Buffer | undefined> {
    const output = this.lastOutput;
    if (output && this.lastJpegOf !== output) {
      this.lastJpeg = await sharp(output).jpeg({ quality: this.start.output.quality }).toBuffer();
      this.lastJpegOf = output;
    }
    return this.lastJpeg;
  }

  /** Its MJPEG and snapshot URLs on every gateway, as a single node's session gives them. */
  get outputPaths(): { mjpeg_url: string; snapshot_url: string } {
    const base = this.name === undefined ? `/v1/streams/${this.id}` : `/v1/streams/by-name/${this.name}`;
    return { mjpeg_url: `${base}/mjpeg`, snapshot_url: `${base}/snapshot` };
  }

  /** The worker running it now. */
  get worker(): NodeInfo | undefined {
    return this.live ? this.upstream?.worker : undefined;
  }

  /** Milliseconds since its worker was last heard from (0 while it has none). */
  get workerSilentMs(): number {
    return this.live ? (this.upstream?.silentMs ?? 0) : 0;
  }

  /**
   * Claims its name, then places the stream; the client gets `started` (or an error and a close) when a worker
   * took it.
   */
  async open(): Promise<void> {
    const name = this.name;
    if (name !== undefined && !(await this.deps.claimName(name, this).catch(() => false))) {
      const e = new ServiceError('conflict', `a stream named "${name}" is already running; stop it first or choose another name`, { field: 'name' });
      this.toClient(errorMessage(e));
      this.ws.close(CLOSE.nameTaken, e.message.slice(0, 120));
      return;
    }
    return this.connect();
  }

  onClientFrame(bytes: Buffer): void {
    if (this.closed || this.start.mode === 'txt2img') return;
    const id = ++this.inputCounter;
    this.stats.framesIn++;
    this.deps.ctx.metrics.framesIn.inc();
    this.arrivals.set(id, performance.now());
    if (!this.live && this.newest && this.newest.id > this.lastShown && !this.sent.inFlight().includes(this.newest.id)) {
      this.stats.droppedInput++; // replaced while the stream was between workers (latest-frame-wins)
      this.arrivals.delete(this.newest.id);
    }
    this.newest = { id, bytes };
    if (this.live) this.send(this.newest);
  }

  onClientText(text: string): void {
    let message;
    try {
      message = parseClientMessage(text);
    } catch (error) {
      return this.toClient(errorMessage(error));
    }
    switch (message.type) {
      case 'start':
        return this.toClient(errorMessage(new ServiceError('conflict', 'the stream has already started')));
      case 'ping':
        return this.toClient({ type: 'pong' });
      case 'ack':
        this.output.ack(message.frames);
        if (this.live) this.upstream!.sendText(text);
        return;
      case 'update':
        if (!this.live) this.held.push(text);
        else {
          this.unanswered.push(text);
          this.upstream!.sendText(text);
        }
        return;
      case 'stop':
        this.stopping = true;
        if (this.live) this.upstream!.sendText(text);
        else this.finish();
        return;
    }
  }

  /** The client left (or the gateway shuts down): the worker's session ends too. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.upstream?.close();
    this.upstream = undefined;
    this.deps.publish(this, undefined);
    this.emit('close');
    this.removeAllListeners();
  }

  /** The worker is gone or going (socket closed, heartbeat lost, draining): run the stream on another. */
  move(reason: string): void {
    const old = this.upstream;
    if (this.closed || !old || !this.live) return;
    this.live = false;
    this.upstream = undefined;
    this.target = undefined;
    old.drop();
    this.excluded.set(old.worker.id, Date.now() + EXCLUDE_MS);
    // the newest frame goes to the next worker: it is not lost
    const inFlight = this.sent.inFlight().filter((id) => id !== this.newest?.id).length;
    this.stats.failovers++;
    this.stats.droppedInFlight += inFlight;
    this.deps.metrics.failovers.inc();
    if (inFlight > 0) this.deps.ctx.metrics.framesDropped.inc({ reason: 'failover' }, inFlight);
    this.movingSince ??= performance.now();
    // updates the dead worker never answered go to the next one, before any held since
    this.held = [...this.unanswered, ...this.held];
    this.unanswered = [];
    this.deps.ctx.log.warn('stream moving to another worker', { stream: this.id, from: old.worker.id, reason, dropped_in_flight: inFlight });
    this.deps.publish(this, this.entry(null));
    void this.connect();
  }

  /** Workers not to place it on now (they refused or lost it lately). */
  excludedIds(): ReadonlySet<string> {
    return new Set(this.excluded.keys());
  }

  entry(worker: string | null = this.worker?.id ?? null): StreamEntry {
    return {
      id: this.id,
      name: this.name ?? null,
      gateway: this.deps.self.id,
      gateway_url: this.deps.self.url,
      worker,
      mode: this.start.mode,
      width: this.size.width,
      height: this.size.height,
      started_at: this.startedAt,
      failovers: this.stats.failovers,
    };
  }

  /** Finds a worker and opens the stream there, retrying until one takes it or PLACEMENT_TIMEOUT_MS pass. */
  private async connect(): Promise<void> {
    const deadline = Date.now() + PLACEMENT_TIMEOUT_MS;
    while (!this.closed) {
      const now = Date.now();
      for (const [id, until] of this.excluded) if (until < now) this.excluded.delete(id);
      let worker: NodeInfo | undefined;
      try {
        worker = await this.deps.place(this);
      } catch (error) {
        this.deps.ctx.log.warn('placement failed', { stream: this.id, error: String(error) });
      }
      if (this.closed) break; // the client left while placement asked Redis
      if (worker) {
        this.openOn(worker);
        return;
      }
      if (Date.now() > deadline) {
        const e = new ServiceError('unavailable', 'no worker of the cluster can take this stream now; try again later');
        this.toClient(errorMessage(e));
        this.ws.close(CLOSE.tryAgainLater, e.message);
        return;
      }
      await new Promise((r) => setTimeout(r, PLACEMENT_RETRY_MS));
    }
    this.target = undefined;
  }

  private openOn(worker: NodeInfo): void {
    // the stream's current parameters (defaults filled in, seed drawn) once a worker has started it; its name
    // stays here, where its URLs are served
    const { name: _name, ...start } = { ...this.start, params: this.announced ? this.params : this.start.params };
    this.refusal = undefined;
    this.upstream = new Upstream(worker, start, this.deps.ctx.config.apiKey, {
      onMessage: (m) => this.fromWorker(m),
      onFrame: (meta, bytes) => this.fromWorkerFrame(meta, bytes),
      onClose: (code, reason) => this.workerClosed(worker, code, reason),
    });
  }

  private fromWorker(message: Message): void {
    switch (message.type) {
      case 'started':
        return this.started(message);
      case 'updated':
        this.unanswered.shift();
        this.params = message['params'] as GenerationParams;
        return this.toClient(message);
      case 'error': {
        if (!this.live) {
          this.refusal = message; // the start failed: the close that follows says whether for good
          return;
        }
        const input = message['input_id'];
        if (typeof input !== 'number') this.unanswered.shift(); // an update's answer (frames carry their id)
        this.stats.errors++;
        return this.toClient({ ...message, input_id: typeof input === 'number' ? this.sent.clientId(input) : null });
      }
      case 'stopped':
        return this.finish();
      default:
        return; // pong: the gateway answers pings itself
    }
  }

  private started(message: Message): void {
    this.live = true;
    this.sent = new SentFrames();
    this.params = message['params'] as GenerationParams;
    this.size = { width: Number(message['width']), height: Number(message['height']) };
    if (!this.announced) {
      this.announced = true;
      this.toClient({
        type: 'started',
        protocol: PROTOCOL_VERSION,
        stream_id: this.id,
        name: this.name ?? null,
        params: this.params,
        notes: message['notes'] ?? [],
        width: this.size.width,
        height: this.size.height,
        window: this.start.window,
        ...this.outputPaths,
      });
    }
    this.deps.publish(this, this.entry());
    // what waited while there was no worker: the newest frame not yet shown, then the messages in order
    if (this.newest && this.newest.id > this.lastShown) this.send(this.newest);
    const held = this.held;
    this.held = [];
    for (const text of held) this.onClientText(text);
  }

  private send(frame: { id: number; bytes: Buffer }): void {
    this.sent.push(frame.id);
    this.upstream!.sendFrame(frame.bytes);
  }

  private fromWorkerFrame(meta: Message, bytes: Buffer): void {
    if (!this.live || this.closed) return;
    // 1. which client frame it shows; frames sent before it and never shown were dropped by the worker
    const upstreamInput = meta['input_id'];
    const source = typeof upstreamInput === 'number' ? this.sent.clientId(upstreamInput) : null;
    if (source !== null) {
      this.stats.droppedInput += this.sent.show(source);
      this.lastShown = Math.max(this.lastShown, source);
    }
    // 2. latency as the client sees it: from the frame's arrival here
    const now = performance.now();
    const arrived = source !== null ? this.arrivals.get(source) : undefined;
    if (source !== null) for (const id of this.arrivals.keys()) if (id < source) this.arrivals.delete(id);
    const outputId = ++this.outputCounter;
    if (this.movingSince !== undefined) {
      this.deps.metrics.failoverSeconds.observe((now - this.movingSince) / 1000);
      this.deps.ctx.log.info('stream moved', { stream: this.id, to: this.upstream?.worker.id, ms: Math.round(now - this.movingSince), output_id: outputId });
      this.movingSince = undefined;
    }
    if (meta['skipped'] === true) this.stats.skipped++;
    const rewritten: Message = { ...meta, output_id: outputId, input_id: source, ...(arrived !== undefined ? { latency_ms: Math.round((now - arrived) * 10) / 10 } : {}) };
    this.output.send({ meta: rewritten, bytes });
    this.forViewers(bytes, rewritten, arrived ?? now);
  }

  /**
   * Outputs for the gateway's own viewers, in order: JPEG for MJPEG and pushes (a JPEG stream's bytes as they are,
   * others re-encoded while watched), pixels for WHEP (decoded while watched).
   */
  private forViewers(bytes: Buffer, meta: Message, arrivedAt: number): void {
    const jpeg = meta['format'] === 'jpeg';
    this.lastOutput = bytes;
    if (jpeg) {
      this.lastJpeg = this.lastJpegOf = bytes;
      this.emit('jpeg', bytes);
    }
    const reencode = !jpeg && this.listenerCount('jpeg') > 0;
    const decode = this.listenerCount('output') > 0;
    if (!reencode && !decode) return;
    this.viewers = this.viewers
      .then(async () => {
        if (reencode) {
          this.lastJpeg = await sharp(bytes).jpeg({ quality: this.start.output.quality }).toBuffer();
          this.lastJpegOf = bytes;
          this.emit('jpeg', this.lastJpeg);
        }
        if (decode) {
          const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
          const output: RawOutput = { rgb: data, width: info.width, height: info.height, arrivedAt, meta: meta as unknown as FrameMeta };
          this.emit('output', output);
        }
      })
      .catch((error: unknown) => this.deps.ctx.log.warn('relayed output not decodable', { stream: this.id, error: String(error) }));
  }

  private workerClosed(worker: NodeInfo, code: number, reason: string): void {
    if (this.closed) return;
    if (this.stopping) return this.finish();
    if (this.live) return this.move(`worker closed the stream (${code}${reason ? ` ${reason}` : ''})`);
    // the start did not get through
    this.upstream = undefined;
    this.target = undefined;
    const refusal = this.refusal;
    if (refusal && FINAL_START_CODES.has(code)) {
      this.toClient(refusal);
      this.ws.close(code, reason.slice(0, 120));
      return;
    }
    this.excluded.set(worker.id, Date.now() + EXCLUDE_MS);
    void this.connect();
  }

  /** `stopped` with the stream's counters, then a normal close. */
  private finish(): void {
    if (this.closed) return;
    this.toClient({ type: 'stopped', stats: this.stats });
    this.ws.close(CLOSE.normal, 'stopped');
    this.close();
  }

  private toClient(message: object): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(message));
  }
}

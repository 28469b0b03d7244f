/**
 * The open streams, with the limits on them: how many in all and per client address, and how much latent area
 * (width / f x height / f, f the VAE factor) they use together, since a stream's memory and compute grow with it;
 * and their names. A stream reserves its place, area and name before it opens, and resizes its reservation
 * before a size change.
 */
import { ServiceError } from '../../models/errors.ts';
import type { GenerationParams } from '../../pipelines/params.ts';
import { StreamNames } from './names.ts';
import type { StartMessage } from './protocol.ts';
import type { RawOutput, StreamStats } from './session.ts';

/**
 * What the stream routes (MJPEG, snapshot, push) need of a stream: a session running here (session.ts), or a
 * stream a cluster gateway relays to a worker (server/cluster/relay.ts).
 */
export interface LiveStream {
  readonly id: string;
  /** The name its stable URLs use (/v1/streams/by-name/NAME/...), if the start gave one. */
  readonly name: string | undefined;
  readonly start: StartMessage;
  readonly size: { readonly width: number; readonly height: number };
  readonly params: GenerationParams;
  readonly stats: StreamStats;
  /** The latest output as JPEG, if any. */
  readonly latestJpeg: Buffer | undefined;
  /** The latest output as JPEG for a snapshot (encoded on demand when none was made for it), if any. */
  snapshot(): Promise<Buffer | undefined>;
  /** Events: 'jpeg' (each output as JPEG), 'output' (each output as pixels, for WebRTC) and 'close'. */
  on(event: 'jpeg', listener: (jpeg: Buffer) => void): unknown;
  on(event: 'output', listener: (output: RawOutput) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  off(event: 'jpeg', listener: (jpeg: Buffer) => void): unknown;
  off(event: 'output', listener: (output: RawOutput) => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  once(event: 'close', listener: () => void): unknown;
}

/** A stream's hold on the registry: its place and its latent area. */
export interface Reservation {
  readonly area: number;
  /** Moves the reservation to another area; throws rate_limited (and keeps the old area) when it does not fit. */
  resize(area: number): void;
  release(): void;
}

export interface StreamLimits {
  readonly maxStreams: number;
  readonly maxPerClient: number;
  /** Latent area all streams may use together. */
  readonly maxArea: number;
}

/** How long a client should wait before retrying a stream refused for lack of room, s. */
const RETRY_AFTER_S = 5;

export class StreamRegistry<S extends LiveStream = LiveStream> {
  private readonly sessions = new Map<string, { session: S; client: string }>();
  private readonly held = new Set<{ client: string; area: number; name: string | undefined }>();
  /** Stable outputs by stream name. */
  readonly names: StreamNames;

  constructor(
    private readonly limits: StreamLimits,
    /** The size of a name's placeholder before any stream of that name ran (the model's default). */
    placeholderSize: { width: number; height: number },
  ) {
    this.names = new StreamNames(placeholderSize);
  }

  /**
   * Holds a place, `area` and the name (if any) for a stream being opened, until the reservation is released
   * (when the stream closes); throws rate_limited when no place or area is free and conflict when a running or
   * opening stream has the name.
   */
  reserve(client: string, area: number, name?: string): Reservation {
    const { maxStreams, maxPerClient } = this.limits;
    if (this.held.size >= maxStreams) throw new ServiceError('rate_limited', `the server already runs ${maxStreams} streams; try again later`, { retryAfter: RETRY_AFTER_S });
    if (this.countFor(client) >= maxPerClient) throw new ServiceError('rate_limited', `at most ${maxPerClient} streams per client`, { retryAfter: RETRY_AFTER_S });
    if (name !== undefined && ([...this.held].some((e) => e.name === name) || this.names.running(name))) {
      throw new ServiceError('conflict', `a stream named "${name}" is already running; stop it first or choose another name`, { field: 'name' });
    }
    this.checkArea(area, 0);
    const entry = { client, area, name };
    this.held.add(entry);
    return {
      get area() {
        return entry.area;
      },
      resize: (next) => {
        if (!this.held.has(entry)) return;
        this.checkArea(next, entry.area);
        entry.area = next;
      },
      release: () => void this.held.delete(entry),
    };
  }

  /** Latent area held by all streams (and streams being opened). */
  get area(): number {
    let total = 0;
    for (const e of this.held) total += e.area;
    return total;
  }

  /** A stream that opened: listed until it closes, when its reservation is released. */
  add(session: S, client: string, reservation: Reservation): void {
    this.sessions.set(session.id, { session, client });
    this.names.attach(session);
    session.once('close', () => {
      this.sessions.delete(session.id);
      reservation.release();
    });
  }

  get(id: string): S {
    const entry = this.sessions.get(id);
    if (!entry) throw new ServiceError('not_found', `no stream ${id}`);
    return entry.session;
  }

  get size(): number {
    return this.sessions.size;
  }

  all(): S[] {
    return [...this.sessions.values()].map((e) => e.session);
  }

  private checkArea(area: number, current: number): void {
    const used = this.area - current;
    if (used + area > this.limits.maxArea) {
      throw new ServiceError(
        'rate_limited',
        `this stream needs ${area} latent pixels and the server's streams already use ${used} of ${this.limits.maxArea}: use a smaller size, or try again when a stream ends`,
        { retryAfter: RETRY_AFTER_S, field: 'width' },
      );
    }
  }

  private countFor(client: string): number {
    let n = 0;
    for (const e of this.held) if (e.client === client) n++;
    return n;
  }
}

/**
 * The one place where model calls wait for a worker. Every run of a session that lives on a worker thread is a
 * ModelCall in `queue` until a worker that holds the model has room; it is bound to a worker only then (late
 * binding), so a model loaded on several workers runs on whichever frees first.
 *
 * Which waiting call goes next is urgency.ts's rule (pickNext): live frames before interactive renders before
 * background jobs, earliest deadline first within a class, with a minimum share of worker time owed to the lower
 * classes. While live streams are active (a live call within LIVE_ACTIVE_MS), a call below live goes only to a
 * worker that has been idle for IDLE_GAP_FRACTION of the tightest live frame interval (unless its class is owed its
 * share): the second slot of a worker (CALLS_PER_WORKER) is kept for live calls, and the short gaps between a
 * stream's calls (its frame's work on the main thread) are not taken, only spare time the streams really leave. A
 * live frame then waits behind at most one call of another class (chunked to a fraction of a frame interval, see
 * server/batcher.ts), and mostly behind none. A call below live whose model's measured call time is over
 * CHUNK_FRACTION of that interval (a full-VAE decode of a job's image) runs, while streams are live, only when its
 * class is owed its share.
 */
import { ServiceError } from '../errors.ts';
import type { Feed, Outputs, Rgb8Tensor } from './contract.ts';
import { CHUNK_FRACTION, ClassShares, currentUrgency, LiveActivity, pickNext, type CallClass, type Urgency } from './urgency.ts';

/** While streams are live, a worker counts as spare after being idle this fraction of the tightest frame interval. */
export const IDLE_GAP_FRACTION = 0.25;

/**
 * Calls a worker may hold at once: one running and one waiting on the worker's side, so the worker does not
 * idle while its last result travels to the main thread and the next call travels back. More would only move
 * the waiting out of this queue, where it can no longer be reordered.
 */
export const CALLS_PER_WORKER = 2;

/** A worker as the dispatcher sees it (worker-pool.ts's SessionWorker). */
export interface CallTarget {
  /** Calls sent and not yet answered. */
  readonly inFlight: number;
  readonly alive: boolean;
  run(session: number, feeds: Record<string, Feed>, rgb8Output: string | undefined): Promise<Outputs | { rgb8: Rgb8Tensor }>;
}

/** Where one model's session lives: a worker and the session's id there (several for a replicated model). */
export interface Replica {
  readonly worker: CallTarget;
  readonly session: number;
}

export interface ModelCall {
  /** The model's label, for errors. */
  readonly label: string;
  readonly replicas: readonly Replica[];
  readonly feeds: Record<string, Feed>;
  /** Name of an image output to deliver as RGB bytes instead of all outputs as floats. */
  readonly rgb8Output: string | undefined;
  /** The call's class and deadline, from the async context it was made in (urgency.ts). */
  readonly urgency: Urgency;
  /** performance.now() when the call was submitted (ms). */
  readonly submittedAt: number;
  readonly resolve: (outputs: Outputs | { rgb8: Rgb8Tensor }) => void;
  readonly reject: (error: unknown) => void;
}

/** What the dispatcher reports about each call (server metrics, tests). Times in ms (performance.now()). */
export interface CallEvent {
  readonly label: string;
  readonly class: CallClass;
  /** The worker it ran on. */
  readonly worker: CallTarget;
  readonly submittedAt: number;
  readonly startedAt: number;
  /** Set on the `end` event. */
  readonly endedAt?: number;
  /** True on the `end` event when the call had a deadline and ended after it. */
  readonly missed?: boolean;
}

export interface DispatchListener {
  onStart?(event: CallEvent): void;
  onEnd?(event: CallEvent): void;
}

export interface DispatcherOptions {
  /** Minimum share of worker time owed to interactive and to background work (urgency.ts DEFAULT_MIN_SHARE). */
  readonly minShare?: number;
  /** ms clock (tests pass their own). */
  readonly now?: () => number;
}

export class Dispatcher {
  /** Calls not yet sent to a worker, in arrival order. */
  private readonly queue: ModelCall[] = [];
  private readonly listeners = new Set<DispatchListener>();
  /** When each worker last became idle (ms); a worker not in the map has not run anything yet. */
  private readonly idleSince = new Map<CallTarget, number>();
  private gapTimer: NodeJS.Timeout | undefined;
  /** Mean call time per model label (ms), for the rule on long calls below live. */
  private readonly callMs = new Map<string, number>();
  private readonly now: () => number;
  private shares: ClassShares;
  private readonly live: LiveActivity;

  constructor(options: DispatcherOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.shares = new ClassShares(options.minShare, this.now);
    this.live = new LiveActivity(this.now);
  }

  /** Calls waiting for a worker (not counting those already sent). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Sets the minimum share owed to the classes below live (a server's --background-share). */
  setMinShare(minShare: number): void {
    if (minShare !== this.shares.minShare) this.shares = new ClassShares(minShare, this.now);
  }

  /** Reports every call's start and end to `listener` until the returned function is called. */
  observe(listener: DispatchListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Queues a call with the urgency of the async context it is made in. */
  submit(call: Omit<ModelCall, 'submittedAt' | 'resolve' | 'reject' | 'urgency'>): Promise<Outputs | { rgb8: Rgb8Tensor }> {
    const urgency = currentUrgency();
    this.live.note(urgency);
    return new Promise((resolve, reject) => {
      this.queue.push({ ...call, urgency, submittedAt: this.now(), resolve, reject });
      this.pump();
    });
  }

  /** Sends calls while one can go: the most urgent of those that have a worker with room. */
  private pump(): void {
    for (let next = this.next(); next !== undefined; next = this.next()) {
      const { index, target } = next;
      const c = this.queue.splice(index, 1)[0]!;
      if (!target) {
        c.reject(new ServiceError('unavailable', `${c.label}: its worker thread has stopped`));
        continue;
      }
      const startedAt = this.now();
      this.idleSince.delete(target.worker);
      const event: CallEvent = { label: c.label, class: c.urgency.class, worker: target.worker, submittedAt: c.submittedAt, startedAt };
      for (const l of this.listeners) l.onStart?.(event);
      const ended = this.shares.start(c.urgency.class);
      target.worker
        .run(target.session, c.feeds, c.rgb8Output)
        .finally(() => {
          ended();
          const endedAt = this.now();
          if (target.worker.inFlight === 0) this.idleSince.set(target.worker, endedAt);
          const mean = this.callMs.get(c.label);
          this.callMs.set(c.label, mean === undefined ? endedAt - startedAt : mean + 0.2 * (endedAt - startedAt - mean));
          const end = { ...event, endedAt, missed: c.urgency.deadline !== undefined && endedAt > c.urgency.deadline };
          for (const l of this.listeners) l.onEnd?.(end);
        })
        .then(c.resolve, c.reject)
        // while streams are live, the freed worker is handed out after the result's own continuations ran: a
        // frame's next call (its decode after its UNet step) is then in the queue, and goes before older work
        .finally(() => (this.live.active ? setImmediate(() => this.pump()) : this.pump()));
    }
  }

  /**
   * The call to send now and the replica it goes to (undefined target: all its workers are gone). Among a call's
   * replicas with room, the least busy wins; ties go to the first listed (the model's home).
   */
  private next(): { index: number; target: Replica | undefined } | undefined {
    const liveActive = this.live.active;
    const now = this.now();
    const gap = IDLE_GAP_FRACTION * this.live.tightestInterval;
    let wake: number | undefined; // when a worker held back for the gap rule becomes spare
    // a class owed its share may take a busy worker's second slot, else live calls would keep it from ever idling
    const owed = this.shares.owed(new Set(this.queue.map((c) => c.urgency.class)));
    const ready: { index: number; target: Replica }[] = [];
    for (let index = 0; index < this.queue.length; index++) {
      const call = this.queue[index]!;
      const replicas = call.replicas.filter((r) => r.worker.alive);
      if (replicas.length === 0) return { index, target: undefined };
      // while streams are live, the lower classes take only an idle worker (see the module comment)
      const cls = call.urgency.class;
      const held = liveActive && cls !== 'live' && cls !== owed;
      if (held && (this.callMs.get(call.label) ?? 0) > CHUNK_FRACTION * this.live.tightestInterval) {
        wake = Math.min(wake ?? Infinity, gap); // too long: its share only; look again (shares and live activity move)
        continue;
      }
      const room = held ? 1 : CALLS_PER_WORKER;
      let best: Replica | undefined;
      for (const r of replicas) {
        if (r.worker.inFlight >= room) continue;
        if (held) {
          const spareAt = (this.idleSince.get(r.worker) ?? -Infinity) + gap;
          if (spareAt > now) {
            wake = Math.min(wake ?? Infinity, spareAt - now);
            continue;
          }
        }
        if (!best || r.worker.inFlight < best.worker.inFlight) best = r;
      }
      if (best) ready.push({ index, target: best });
    }
    const pick = pickNext(
      ready.map((r) => this.queue[r.index]!),
      this.shares,
    );
    if (pick === undefined && wake !== undefined && !this.gapTimer) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = undefined;
        this.pump();
      }, Math.ceil(wake));
      this.gapTimer.unref();
    }
    return pick === undefined ? undefined : ready[pick];
  }
}

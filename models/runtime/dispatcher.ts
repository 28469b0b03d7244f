/**
 * The one place where model calls wait for a worker. Every run of a session that lives on a worker thread is a
 * ModelCall in `queue` until a worker that holds the model has room; it is bound to a worker only then (late
 * binding), so a model loaded on several workers runs on whichever frees first. Today the queue is first come,
 * first served; priorities or deadlines (live frames before batch work) belong in `next()`.
 */
import { ServiceError } from '../errors.ts';
import type { Feed, Outputs, Rgb8Tensor } from './contract.ts';

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
  /** performance.now() when the call was submitted (ms). */
  readonly submittedAt: number;
  readonly resolve: (outputs: Outputs | { rgb8: Rgb8Tensor }) => void;
  readonly reject: (error: unknown) => void;
}

export class Dispatcher {
  /** Calls not yet sent to a worker, in the order they will be considered. */
  private readonly queue: ModelCall[] = [];

  /** Calls waiting for a worker (not counting those already sent). */
  get waiting(): number {
    return this.queue.length;
  }

  submit(call: Omit<ModelCall, 'submittedAt' | 'resolve' | 'reject'>): Promise<Outputs | { rgb8: Rgb8Tensor }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...call, submittedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  /** Sends every call that has a worker with room, oldest first; a call whose workers are full waits. */
  private pump(): void {
    for (let call = this.next(0); call !== undefined; call = this.next(call.index)) {
      const { index, target } = call;
      const c = this.queue.splice(index, 1)[0]!;
      if (!target) {
        c.reject(new ServiceError('unavailable', `${c.label}: its worker thread has stopped`));
        continue;
      }
      target.worker
        .run(target.session, c.feeds, c.rgb8Output)
        .then(c.resolve, c.reject)
        .finally(() => this.pump());
    }
  }

  /**
   * The first call from `from` on that can go now, with the replica it goes to (undefined when all its workers
   * are gone). Among replicas with room, the least busy wins; ties go to the first listed (the model's home).
   */
  private next(from: number): { index: number; target: Replica | undefined } | undefined {
    for (let index = from; index < this.queue.length; index++) {
      const replicas = this.queue[index]!.replicas.filter((r) => r.worker.alive);
      if (replicas.length === 0) return { index, target: undefined };
      let best: Replica | undefined;
      for (const r of replicas) if (r.worker.inFlight < CALLS_PER_WORKER && (!best || r.worker.inFlight < best.worker.inFlight)) best = r;
      if (best) return { index, target: best };
    }
    return undefined;
  }
}

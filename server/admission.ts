/**
 * Admission of live streams by capacity. The workers' live load is measured from the dispatcher (worker time of
 * live calls per worker over a window) and from the frames the streams deliver, counted in cost units (steps x
 * the expert's relative MACs: a stream-batch frame runs one UNet row per step, and the UNet dominates). A new
 * stream that states a target_fps is refused when, even at the bottom rung of its load valve (pipelines/load-valve.ts),
 * its frames would not fit beside the live load already on the busiest worker and the share owed to renders and
 * jobs. The estimate assumes the streams already running stay at their current level. Without a measurement (fewer
 * than MIN_FRAMES live frames in the window) or without a target, a stream is admitted.
 *
 * snapshot() is the hook a gateway placing streams on several nodes reads (GET /health `capacity`).
 */
import { ServiceError } from '../models/errors.ts';
import type { CallTarget, Dispatcher } from '../models/runtime/dispatcher.ts';

/** The window the live load is measured over (ms). */
export const CAPACITY_WINDOW_MS = 3000;
/** Live frames a window needs before its cost per unit is trusted (fewer: the tail of a stream, not a rate). */
export const MIN_FRAMES = 20;

export interface CapacitySnapshot {
  /** Fraction of the busiest worker's time live calls took over the window (0..1). */
  readonly live_utilisation: number;
  /** Worker ms per cost unit (one step of the full UNet) on the busiest worker, if measured. */
  readonly ms_per_unit: number | null;
  /** Cost units per second that still fit on the busiest worker (null: not measured). */
  readonly free_units_per_second: number | null;
  /** Fraction of worker time kept for interactive renders and background jobs. */
  readonly reserved: number;
}

export class LiveCapacity {
  private spans: { worker: CallTarget; start: number; end: number }[] = [];
  private frames: { at: number; units: number }[] = [];

  constructor(
    /** Fraction of worker time kept for the classes below live (twice the minimum share: interactive and background). */
    readonly reserved: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Measures a dispatcher's live calls until the returned function is called. */
  watch(dispatcher: Dispatcher): () => void {
    return dispatcher.observe({
      onEnd: (e) => {
        if (e.class === 'live' && e.endedAt !== undefined) this.record(e.worker, e.startedAt, e.endedAt);
      },
    });
  }

  /** A live call ran on `worker` from `start` to `end` (ms). */
  record(worker: CallTarget, start: number, end: number): void {
    this.spans.push({ worker, start, end });
  }

  /** A live frame was delivered that ran `steps` steps on an expert of `relativeMacs`. */
  frameServed(steps: number, relativeMacs: number): void {
    this.frames.push({ at: this.now(), units: steps * relativeMacs });
  }

  snapshot(): CapacitySnapshot {
    const now = this.now();
    const from = now - CAPACITY_WINDOW_MS;
    this.spans = this.spans.filter((s) => s.end > from);
    this.frames = this.frames.filter((f) => f.at > from);
    // a worker holds up to two calls at once (one running, one waiting beside it): its busy time is the union
    const byWorker = new Map<CallTarget, [number, number][]>();
    for (const s of this.spans) byWorker.set(s.worker, [...(byWorker.get(s.worker) ?? []), [Math.max(s.start, from), s.end]]);
    const busiest = Math.max(0, ...[...byWorker.values()].map(unionLength));
    const units = this.frames.reduce((a, f) => a + f.units, 0);
    const utilisation = busiest / CAPACITY_WINDOW_MS;
    const msPerUnit = this.frames.length >= MIN_FRAMES && busiest > 0 ? busiest / units : null;
    const free = msPerUnit === null ? null : (Math.max(0, 1 - this.reserved - utilisation) * 1000) / msPerUnit;
    return { live_utilisation: utilisation, ms_per_unit: msPerUnit, free_units_per_second: free, reserved: this.reserved };
  }

  /**
   * Throws `unavailable` (a stream closes 1013) when `targetFps` frames per second of `units` cost units each (the
   * stream's bottom rung) do not fit.
   */
  admit(targetFps: number | undefined, units: number): void {
    if (targetFps === undefined) return;
    const { free_units_per_second: free, live_utilisation: u, ms_per_unit: ms } = this.snapshot();
    if (free === null || ms === null) return;
    const need = targetFps * units;
    if (need <= free) return;
    const pct = (x: number) => `${Math.round(x * 100)}%`;
    throw new ServiceError(
      'unavailable',
      `cannot serve ${targetFps} fps even fully degraded: live streams use ${pct(u)} of the busiest worker, this stream would need ${pct((need * ms) / 1000)} more (${pct(this.reserved)} is kept for renders and jobs); try a lower target_fps or later`,
    );
  }
}

/** Total length of the union of intervals [start, end]. */
function unionLength(intervals: [number, number][]): number {
  let total = 0;
  let reach = -Infinity;
  for (const [start, end] of intervals.sort((a, b) => a[0] - b[0])) {
    if (end <= reach) continue;
    total += end - Math.max(start, reach);
    reach = end;
  }
  return total;
}

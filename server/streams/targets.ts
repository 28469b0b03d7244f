/**
 * A live stream's timing targets and the deadline each of its frames carries to the model calls
 * (models/runtime/urgency.ts). The frame interval is the client's `target_fps`, else the measured interval of
 * its input frames, else 30 fps; a frame's calls are due `max_latency_ms` after it arrived, else
 * LATENCY_INTERVALS frame intervals after (a frame shares the pipeline with the one before it).
 */
import { PIPELINE_DEPTH } from '../../pipelines/stream-pipeline.ts';
import { DEFAULT_LIVE_INTERVAL_MS } from '../../models/runtime/urgency.ts';

/** The start/update fields that set a stream's targets (PROTOCOL.md). */
export interface StreamTargetFields {
  readonly target_fps?: number | undefined;
  readonly max_latency_ms?: number | undefined;
}

/** A frame's latency budget in frame intervals when the client sets no max_latency_ms. */
export const LATENCY_INTERVALS = PIPELINE_DEPTH;
/** Weight of a new gap between input frames in the measured interval. */
const INTERVAL_SMOOTHING = 0.2;
/** Gaps longer than this (ms) are pauses, not the stream's rate. */
const MAX_GAP_MS = 1000;

export class StreamTargets {
  private fields: StreamTargetFields;
  private measured: number | undefined;
  private lastArrival: number | undefined;

  constructor(fields: StreamTargetFields = {}) {
    this.fields = { ...fields };
  }

  /** Applies the fields an update gives (null clears one); the others stay. */
  update(fields: { readonly [K in keyof StreamTargetFields]?: number | null | undefined }): void {
    const next: Record<string, number | undefined> = { ...this.fields };
    for (const key of ['target_fps', 'max_latency_ms'] as const) {
      if (fields[key] === null) next[key] = undefined;
      else if (fields[key] !== undefined) next[key] = fields[key];
    }
    this.fields = next;
  }

  get current(): StreamTargetFields {
    return this.fields;
  }

  /** An input frame arrived at `at` (performance.now() ms): the measured interval follows the input's rate. */
  arrived(at: number): void {
    const gap = this.lastArrival === undefined ? undefined : at - this.lastArrival;
    this.lastArrival = at;
    if (gap === undefined || gap <= 0 || gap > MAX_GAP_MS) return;
    this.measured = this.measured === undefined ? gap : this.measured + INTERVAL_SMOOTHING * (gap - this.measured);
  }

  /** The stream's frame interval (ms). */
  get interval(): number {
    const fps = this.fields.target_fps;
    return fps !== undefined ? 1000 / fps : (this.measured ?? DEFAULT_LIVE_INTERVAL_MS);
  }

  /** How long after arriving a frame's output is due (ms). */
  get budget(): number {
    return this.fields.max_latency_ms ?? LATENCY_INTERVALS * this.interval;
  }

  /** The timing a frame that arrived at `arrivedAt` carries to its model calls. */
  timing(arrivedAt: number): { deadline: number; interval: number } {
    return { deadline: arrivedAt + this.budget, interval: this.interval };
  }
}

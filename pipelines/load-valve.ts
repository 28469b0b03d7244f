/**
 * The load valve: when a live stream's frames miss their deadline, its plan is degraded one rung at a time in a
 * fixed order that costs quality least first, and restored one rung at a time when load falls:
 *   1. the similarity filter more eager (threshold EAGER_THRESHOLD at most: near-identical frames repeat the last
 *      output and run no model),
 *   2. a cheaper APTP expert, through the stream's budget: one rung per expert cost below the current one, down to
 *      the stream's `min_budget` (the router still picks within the budget; a stream with adapters or a forced
 *      expert keeps its UNet),
 *   3. fewer denoising steps, one at a time down to 1 (a new schedule re-primes the stream batch).
 * `degrade: false` keeps the stream's plan as asked. Degrading is quick, restoring slow (hysteresis): a rung down
 * after a window of frames where more than DEGRADE_MISS_RATE missed their deadline; a rung up only after
 * RESTORE_WINDOWS windows in a row whose 90th-percentile latency stayed under RESTORE_LATENCY of the budget.
 */
import type { GenerationParams } from './params.ts';

/** The similarity threshold the first rung lowers the stream's to (cosine similarity; lower skips more). */
export const EAGER_THRESHOLD = 0.9;
/** Frames a window judges. */
export const WINDOW_FRAMES = 15;
/** Share of a window's frames past their deadline that takes a rung down. */
export const DEGRADE_MISS_RATE = 0.2;
/** A window whose 90th-percentile latency is under this fraction of the budget counts toward a rung up. */
export const RESTORE_LATENCY = 0.6;
/** Such windows in a row needed to restore a rung. */
export const RESTORE_WINDOWS = 3;

/** What a rung changes, and which kind of step it is (for metrics and frame metadata). */
export interface Rung {
  readonly kind: 'filter' | 'budget' | 'steps';
  /** Parameters laid over the stream's own, cumulative with the rungs above it. */
  readonly params: Partial<GenerationParams>;
}

export interface ValveOptions {
  /** False: never degrade this stream. */
  readonly degrade: boolean;
  /** The lowest compute budget the valve may give the stream (fraction of the full UNet's MACs). */
  readonly minBudget: number;
}

export const DEFAULT_VALVE: ValveOptions = Object.freeze({ degrade: true, minBudget: 0 });

/**
 * The rungs for a stream's parameters, top (least degraded) first; each rung's params include those of the rungs
 * before it. `expertCosts`: relative MACs of the pack's experts (none without APTP experts).
 */
export function ladder(params: GenerationParams, expertCosts: readonly number[], options: ValveOptions): Rung[] {
  if (!options.degrade) return [];
  const rungs: Rung[] = [];
  let acc: Partial<GenerationParams> = {};
  const push = (kind: Rung['kind'], more: Partial<GenerationParams>) => {
    acc = { ...acc, ...more };
    rungs.push({ kind, params: acc });
  };
  if (params.similarity_threshold > EAGER_THRESHOLD) push('filter', { similarity_threshold: EAGER_THRESHOLD });
  const pinned = params.expert !== undefined || params.adapters.some((a) => a.weight !== 0);
  if (!pinned) {
    const cap = params.budget === 'auto' ? 1 : params.budget;
    const cheaper = [...new Set(expertCosts)].filter((c) => c < cap && c >= options.minBudget).sort((a, b) => b - a);
    for (const budget of cheaper) push('budget', { budget });
  }
  if (params.t_index_list === undefined) for (let steps = params.steps - 1; steps >= 1; steps--) push('steps', { steps });
  return rungs;
}

/** One stream's valve: judges each window of frames and says when to move a rung (0 = the stream's own plan). */
export class LoadValve {
  private latencies: number[] = [];
  private misses = 0;
  private goodWindows = 0;
  /** Rungs down now: 0 is the stream's own plan, n is rungs[n - 1]. */
  level = 0;

  constructor(private rungs: readonly Rung[]) {}

  /**
   * New rungs (the stream's parameters, targets or options changed); the level is kept within them, and the
   * window starts again (frames judged against the old target say nothing about the new one).
   */
  setRungs(rungs: readonly Rung[]): void {
    this.rungs = rungs;
    this.level = Math.min(this.level, rungs.length);
    this.latencies = [];
    this.misses = 0;
    this.goodWindows = 0;
  }

  /** The parameters laid over the stream's at the current level. */
  get overrides(): Partial<GenerationParams> {
    return this.level === 0 ? {} : this.rungs[this.level - 1]!.params;
  }

  /** The kind of the current rung (undefined at level 0). */
  get kind(): Rung['kind'] | undefined {
    return this.level === 0 ? undefined : this.rungs[this.level - 1]!.kind;
  }

  /**
   * A frame was delivered `latencyMs` after it arrived, against a budget of `budgetMs`. Returns 'down' or 'up'
   * when the level changed (then apply `overrides`), else undefined.
   */
  observe(latencyMs: number, budgetMs: number): 'down' | 'up' | undefined {
    this.latencies.push(latencyMs);
    if (latencyMs > budgetMs) this.misses++;
    if (this.latencies.length < WINDOW_FRAMES) return undefined;
    const missRate = this.misses / this.latencies.length;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const p90 = sorted[Math.ceil(0.9 * sorted.length) - 1]!;
    this.latencies = [];
    this.misses = 0;
    if (missRate > DEGRADE_MISS_RATE) {
      this.goodWindows = 0;
      if (this.level >= this.rungs.length) return undefined;
      this.level++;
      return 'down';
    }
    this.goodWindows = p90 < RESTORE_LATENCY * budgetMs ? this.goodWindows + 1 : 0;
    if (this.goodWindows >= RESTORE_WINDOWS && this.level > 0) {
      this.goodWindows = 0;
      this.level--;
      return 'up';
    }
    return undefined;
  }
}

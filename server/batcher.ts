/**
 * Cross-stream batching. Every stream (and batch render) asks for UNet work through a runner from here. While
 * the UNet is busy, requests queue up; when it frees, the oldest waiting request's group is run as ONE call
 * together with every other waiting request of the same group (same latent size, same model variant), up to
 * maxRows. No timers: an idle UNet runs a request at once (lowest latency), and under load batches form by
 * themselves. Groups take turns by the age of their oldest request, so no stream starves.
 * How many rows a call takes comes from measured cost: each group keeps the time of its calls by rows per call
 * (UnetCosts), and a batch grows only while the measured cost per row at the bigger size is clearly lower (on a CPU
 * it stops falling after a few rows; growing further only makes every stream in the batch wait). Sizes not yet
 * measured are tried. With maxRows 1 (no batching) requests go straight to the model's worker queue
 * (models/runtime/dispatcher.ts), which keeps the worker busy back to back; holding them here would leave it idle
 * between calls.
 *
 * Urgency (models/runtime/urgency.ts, the dispatcher's rule): the next call is led by the most urgent waiting
 * request (live frames, then interactive renders, then background jobs; earliest deadline first; a class below
 * live that got less than its minimum share of UNet time goes first). Requests join a call only if they are at
 * least as urgent as its leader (a background row never lengthens a live frame's call), and the call carries its
 * most urgent member's urgency to the dispatcher. While live streams are active, a background request is cut
 * into calls of as many rows as the cost table says fit in CHUNK_FRACTION of the tightest live frame interval
 * (one row when none is measured to fit), run one after another: a live frame waits behind one short call.
 */
import type { UnetRow, UnetRunner } from '../pipelines/denoise-step.ts';
import type { Size } from '../pipelines/engine.ts';
import type { Metrics } from './metrics.ts';
import { CHUNK_FRACTION, ClassShares, classRank, compareUrgency, currentUrgency, LiveActivity, mostUrgent, pickNext, withUrgency, type CallClass, type Urgency, type Waiting } from '../models/runtime/urgency.ts';


interface Request extends Waiting {
  readonly group: string;
  readonly rows: readonly UnetRow[];
  /** Runs rows of the group on its UNet (the pack's, an expert's, a merged-adapter session's). */
  readonly execute: UnetRunner;
  readonly resolve: (eps: Float32Array[]) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * A bigger call must cost at least this much less per row than the smaller one to be worth waiting for: below
 * it, the streams joined to a call wait for less than they gain.
 */
export const MIN_ROW_SAVING = 0.1;
/** Weight of a new measurement in a size's running mean. */
const COST_SMOOTHING = 0.2;

/** Measured UNet call times per group and rows per call: the cost table batches are sized from. */
export class UnetCosts {
  private readonly ms = new Map<string, Map<number, number>>();

  record(group: string, rows: number, ms: number): void {
    let table = this.ms.get(group);
    if (!table) this.ms.set(group, (table = new Map()));
    const before = table.get(rows);
    table.set(rows, before === undefined ? ms : before + COST_SMOOTHING * (ms - before));
  }

  /** Mean ms per row of calls of `rows` rows, if measured. */
  perRow(group: string, rows: number): number | undefined {
    const ms = this.ms.get(group)?.get(rows);
    return ms === undefined ? undefined : ms / rows;
  }

  /**
   * Whether a call of `to` rows is worth more than one of `from`: cheaper per row by MIN_ROW_SAVING, or not
   * measured yet ('try': the batch grows to it and no further, so sizes are measured one step at a time).
   */
  worthGrowing(group: string, from: number, to: number): boolean | 'try' {
    const [a, b] = [this.perRow(group, from), this.perRow(group, to)];
    if (b === undefined) return 'try';
    return a === undefined || b <= a * (1 - MIN_ROW_SAVING);
  }
}

export class UnetBatcher {
  private readonly queue: Request[] = [];
  /**
   * Classes of the calls running now. A call of a class more urgent than every running one may start beside them
   * (a live frame's call does not wait behind a background chunk the dispatcher holds back; the dispatcher runs the
   * live one first); otherwise one call at a time.
   */
  private readonly running = new Set<CallClass>();
  readonly costs = new UnetCosts();
  readonly shares: ClassShares;
  private readonly live: LiveActivity;

  constructor(
    /** Most rows in one UNet call; 1 turns cross-stream batching off (one request per call). */
    readonly maxRows: number,
    private readonly metrics?: Metrics,
    /** ms clock for the cost table, shares and live activity (tests pass their own). */
    private readonly now: () => number = () => performance.now(),
    /** Minimum share of UNet time owed to the classes below live (urgency.ts). */
    minShare?: number,
  ) {
    this.shares = new ClassShares(minShare, now);
    this.live = new LiveActivity(now);
  }

  /** A runner for latents of `size` executed by `execute`; `variant` names the model variant (expert, adapters). */
  runner(size: Size, variant: string, execute: UnetRunner): UnetRunner {
    const group = `${size.latentHeight}x${size.latentWidth}|${variant}`;
    const call: UnetRunner =
      this.maxRows === 1
        ? (rows) => {
            this.metrics?.unetBatchRows.observe(rows.length);
            return execute(rows);
          }
        : (rows) =>
            new Promise<Float32Array[]>((resolve, reject) => {
              this.queue.push({ group, rows, execute, resolve, reject, urgency: currentUrgency(), submittedAt: this.now() });
              this.metrics?.unetQueueDepth.set(this.queue.length);
              this.pump();
            });
    return async (rows) => {
      const urgency = currentUrgency();
      this.live.note(urgency);
      const size = this.chunkRows(group, rows.length, urgency);
      if (size >= rows.length) return call(rows);
      const eps: Float32Array[] = [];
      for (let i = 0; i < rows.length; i += size) eps.push(...(await call(rows.slice(i, i + size))));
      return eps;
    };
  }

  /**
   * Rows per call for a request of `rows` rows: all of them, except for background work while live streams are
   * active: the most rows measured to run within CHUNK_FRACTION of the tightest live interval, at least one.
   */
  chunkRows(group: string, rows: number, urgency: Urgency): number {
    if (urgency.class !== 'background' || rows <= 1 || !this.live.active) return rows;
    const limit = CHUNK_FRACTION * this.live.tightestInterval;
    let fit = 1;
    for (let k = 2; k <= rows; k++) {
      const perRow = this.costs.perRow(group, k);
      if (perRow !== undefined && perRow * k <= limit) fit = k;
    }
    return fit;
  }

  get waiting(): number {
    return this.queue.length;
  }

  private pump(): void {
    if (this.queue.length === 0) return;
    // The most urgent request leads and decides the group; same-group requests at least as urgent join, most
    // urgent first, while rows fit and the cost table says a bigger call is cheaper per row.
    const first = this.queue[pickNext(this.queue, this.shares)!]!;
    if ([...this.running].some((cls) => classRank(cls) <= classRank(first.urgency.class))) return;
    const joining = this.queue.filter((r) => r !== first && r.group === first.group && classRank(r.urgency.class) <= classRank(first.urgency.class)).sort(compareUrgency);
    const batch: Request[] = [first];
    let rows = first.rows.length;
    for (const r of joining) {
      const grown = rows + r.rows.length;
      const worth = grown <= this.maxRows && this.costs.worthGrowing(first.group, rows, grown);
      if (!worth) break; // the rest of the group waits for the next call, in order
      batch.push(r);
      rows = grown;
      if (worth === 'try') break;
    }
    for (const r of batch) this.queue.splice(this.queue.indexOf(r), 1);
    this.metrics?.unetQueueDepth.set(this.queue.length);
    this.metrics?.unetBatchRows.observe(rows);
    const allRows = batch.flatMap((r) => r.rows);
    const started = this.now();
    const lead = batch.reduce<Waiting>((a, b) => mostUrgent(a, b), first);
    const cls = lead.urgency.class;
    this.running.add(cls);
    const ended = this.shares.start(cls);
    withUrgency(lead.urgency, () => first.execute(allRows))
      .finally(ended)
      .then((eps) => {
        this.costs.record(first.group, rows, this.now() - started);
        let offset = 0;
        for (const r of batch) {
          r.resolve(eps.slice(offset, offset + r.rows.length));
          offset += r.rows.length;
        }
      })
      .catch(async (error: unknown) => {
        if (batch.length === 1) return batch[0]!.reject(error);
        // Find the request that broke the call: re-run each alone, so only its own stream or job fails.
        for (const r of batch) await withUrgency(r.urgency, () => r.execute(r.rows)).then(r.resolve, r.reject);
      })
      .finally(() => {
        this.running.delete(cls);
        this.pump();
      });
  }
}

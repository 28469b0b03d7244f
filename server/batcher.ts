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
 */
import type { UnetRow, UnetRunner } from '../pipelines/denoise-step.ts';
import type { Size } from '../pipelines/engine.ts';
import type { Metrics } from './metrics.ts';

interface Request {
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
  private running = false;
  readonly costs = new UnetCosts();

  constructor(
    /** Most rows in one UNet call; 1 turns cross-stream batching off (one request per call). */
    readonly maxRows: number,
    private readonly metrics?: Metrics,
    /** ms clock for the cost table (tests pass their own). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A runner for latents of `size` executed by `execute`; `variant` names the model variant (expert, adapters). */
  runner(size: Size, variant: string, execute: UnetRunner): UnetRunner {
    if (this.maxRows === 1) {
      return (rows) => {
        this.metrics?.unetBatchRows.observe(rows.length);
        return execute(rows);
      };
    }
    const group = `${size.latentHeight}x${size.latentWidth}|${variant}`;
    return (rows) =>
      new Promise<Float32Array[]>((resolve, reject) => {
        this.queue.push({ group, rows, execute, resolve, reject });
        this.metrics?.unetQueueDepth.set(this.queue.length);
        this.pump();
      });
  }

  get waiting(): number {
    return this.queue.length;
  }

  private pump(): void {
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    // The oldest request decides the group; same-group requests behind it join while rows fit and the cost
    // table says a bigger call is cheaper per row.
    const first = this.queue[0]!;
    const batch: Request[] = [];
    let rows = 0;
    for (let i = 0; i < this.queue.length; ) {
      const r = this.queue[i]!;
      if (r.group !== first.group) {
        i++;
        continue;
      }
      const grown = rows + r.rows.length;
      const worth = batch.length === 0 || (grown <= this.maxRows && this.costs.worthGrowing(first.group, rows, grown));
      if (!worth) break; // the rest of the group waits for the next call, in order
      batch.push(r);
      rows = grown;
      this.queue.splice(i, 1);
      if (worth === 'try') break;
    }
    this.metrics?.unetQueueDepth.set(this.queue.length);
    this.metrics?.unetBatchRows.observe(rows);
    const allRows = batch.flatMap((r) => r.rows);
    const started = this.now();
    first
      .execute(allRows)
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
        for (const r of batch) await r.execute(r.rows).then(r.resolve, r.reject);
      })
      .finally(() => {
        this.running = false;
        this.pump();
      });
  }
}

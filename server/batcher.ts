/**
 * Cross-stream batching. Every stream (and batch render) asks for UNet work through a runner from here. While
 * the UNet is busy, requests queue up; when it frees, the oldest waiting request's group is run as ONE call
 * together with every other waiting request of the same group (same latent size, same model variant), up to
 * maxRows. No timers: an idle UNet runs a request at once (lowest latency), and under load batches form by
 * themselves. Groups take turns by the age of their oldest request, so no stream starves.
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

export class UnetBatcher {
  private readonly queue: Request[] = [];
  private running = false;

  constructor(
    /** Most rows in one UNet call; 1 turns cross-stream batching off (one request per call). */
    readonly maxRows: number,
    private readonly metrics?: Metrics,
  ) {}

  /** A runner for latents of `size` executed by `execute`; `variant` names the model variant (expert, adapters). */
  runner(size: Size, variant: string, execute: UnetRunner): UnetRunner {
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
    // The oldest request decides the group; same-group requests behind it join while rows fit.
    const first = this.queue[0]!;
    const batch: Request[] = [];
    let rows = 0;
    for (let i = 0; i < this.queue.length; ) {
      const r = this.queue[i]!;
      const fits = batch.length === 0 || (this.maxRows > 1 && rows + r.rows.length <= this.maxRows);
      if (r.group === first.group && fits) {
        batch.push(r);
        rows += r.rows.length;
        this.queue.splice(i, 1);
      } else i++;
    }
    this.metrics?.unetQueueDepth.set(this.queue.length);
    this.metrics?.unetBatchRows.observe(rows);
    const allRows = batch.flatMap((r) => r.rows);
    first
      .execute(allRows)
      .then((eps) => {
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

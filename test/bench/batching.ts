/**
 * Cross-stream batching, measured with inference on worker threads: the UNet's cost per call and per row by rows
 * per call (the cost table the batcher's default comes from), and the aggregate end-to-end fps and latency of 4
 * and 8 streams with batching off (1 row set per call) and on (up to 4 and 16 rows per call), clients in
 * another process, windows interleaved.
 */
import { startServer, type RunningServer } from '../../server/app.ts';
import type { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { Generator } from '../../pipelines/random.ts';
import { createLogger } from '../../server/log.ts';
import { loadFromChild } from './live.ts';
import { fmt, interleave, summarize } from './stats.ts';

export interface BatchingBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly rounds: number;
  readonly log: (line: string) => void;
}

const PARAMS = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', similarity_threshold: 1 } as const;
const ROWS = [1, 2, 4, 8, 16] as const;
const MAX_ROWS = [1, 4, 16] as const;

export async function benchBatching({ engine, quick, rounds, log }: BatchingBenchOptions): Promise<Record<string, unknown>> {
  // 1. the cost table: one UNet call of B rows, on its worker
  const size = engine.size({});
  const prompt = await engine.encodePrompt(parseParams(PARAMS));
  const runner = engine.unetRunner(size);
  const g = new Generator(1);
  const latent = () => Float32Array.from({ length: engine.latentSize(size) }, () => g.normal());
  const rows = (b: number) => Array.from({ length: b }, (_, i) => ({ sample: latent(), timestep: i % 2 ? 299 : 599, context: prompt.cond }));
  const byRows = await interleave(Object.fromEntries(ROWS.map((b) => [String(b), async () => void (await runner(rows(b)))])) as Record<string, () => Promise<void>>, rounds * 2, 3);
  log(`### UNet cost by rows per call (${size.width}x${size.height}, on its worker thread)\n`);
  log('| rows | per call (median) | per row | per row vs 2 rows (one stream\'s call) |');
  log('| --- | --- | --- | --- |');
  const table = ROWS.map((b) => ({ rows: b, call_ms: byRows[String(b)]!.median, row_ms: byRows[String(b)]!.median / b }));
  const perRow2 = table.find((t) => t.rows === 2)!.row_ms;
  for (const t of table) log(`| ${t.rows} | ${fmt(t.call_ms)} ms | ${fmt(t.row_ms)} ms | ${fmt(t.row_ms / perRow2)}x |`);

  // 2. end to end: batching off and on, 4 and 8 streams
  const windows = quick ? 2 : 4;
  const seconds = quick ? 3 : 6;
  const servers = new Map<number, RunningServer>();
  const quiet = createLogger({}, 'error');
  for (const maxBatchRows of MAX_ROWS) servers.set(maxBatchRows, await startServer({ port: 0, maxBatchRows, maxStreams: 16, maxStreamsPerClient: 16, rateLimitPerMinute: 0 }, { engine, log: quiet }));
  const runs = new Map<string, Awaited<ReturnType<typeof loadFromChild>>[]>();
  for (let w = 0; w < windows; w++) {
    for (const streams of [4, 8]) {
      const order = w % 2 ? [...MAX_ROWS].reverse() : MAX_ROWS;
      for (const maxRows of order) {
        const key = `${streams}/${maxRows}`;
        runs.set(key, [...(runs.get(key) ?? []), await loadFromChild(servers.get(maxRows)!, streams, seconds, PARAMS)]);
      }
    }
  }
  log(`\n### Concurrent streams with and without cross-stream batching (live defaults, 2 frames in flight per stream; ${windows} windows of ${seconds} s)\n`);
  log('| streams | rows per call at most | aggregate fps (mean / median) | latency p50 / p95 | vs off |');
  log('| --- | --- | --- | --- | --- |');
  const e2e: Record<string, unknown>[] = [];
  for (const streams of [4, 8]) {
    const off = summarize(runs.get(`${streams}/1`)!.map((r) => r.fps)).mean;
    for (const maxRows of MAX_ROWS) {
      const r = runs.get(`${streams}/${maxRows}`)!;
      const fps = summarize(r.map((x) => x.fps));
      const latency = summarize(r.flatMap((x) => x.serverLatency));
      e2e.push({ streams, max_batch_rows: maxRows, fps, latency_ms: latency, vs_off: fps.mean / off });
      log(`| ${streams} | ${maxRows === 1 ? '1 (off)' : maxRows} | ${fmt(fps.mean, 1)} / ${fmt(fps.median, 1)} | ${fmt(latency.median, 1)} / ${fmt(latency.p95, 1)} ms | ${fmt(fps.mean / off)}x |`);
    }
  }
  await Promise.all([...servers.values()].map((s) => s.close()));
  return { cost_table: table, end_to_end: e2e };
}

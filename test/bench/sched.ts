/**
 * Scheduling (issue 24), side by side in one run: one stream alone and the same stream while a 400-image background
 * job runs (windows alternate), with the job's images per second during the stream's windows; then more streams than
 * the full model serves at their target fps (frames sent at the target rate, as cameras do), with the load valve
 * on and off, and what the valve applied to the frames. Rerun alone with `npm run bench -- --only sched`.
 */
import { startServer, type RunningServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { createLogger } from '../../server/log.ts';
import type { Engine } from '../../pipelines/engine.ts';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CAPACITY_WINDOW_MS } from '../../server/admission.ts';
import { loadFromChild, type LoadResult } from './live.ts';
import { fmt, summarize } from './stats.ts';
import { overall } from './experts.ts';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage } from '../../pipelines/evaluation/evaluator.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { parseParams } from '../../pipelines/params.ts';

export interface SchedBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

/** The stream of issue 24's table: 2-step img2img at the pack's size (128x128), 2 frames in flight. */
const STREAM = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', similarity_threshold: 1 } as const;
const JOB = { kind: 'images', count: 400, lanes: 4, prompt: 'a green square on a grey background', steps: 2 } as const;

async function json(url: string, init?: RequestInit): Promise<Record<string, unknown>> {
  const res = await fetch(url, { ...init, headers: { 'content-type': 'application/json' } });
  return (await res.json()) as Record<string, unknown>;
}

/** Images the job has finished (its progress times its count). */
async function imagesDone(server: RunningServer, id: string): Promise<number> {
  const job = await json(`${server.url}/v1/jobs/${id}`);
  return Math.round(Number(job['progress']) * JOB.count);
}

const pct = (x: number) => `${fmt(100 * x, 0)}%`;
/** Seconds the overloaded streams run before they are measured: the valve moves one rung per 15 frames. */
const VALVE_SETTLE_S = 12;

export async function benchSched({ engine, quick, log }: SchedBenchOptions): Promise<Record<string, unknown>> {
  const windows = quick ? 2 : 4;
  const seconds = quick ? 4 : 8;
  const quiet = createLogger({}, 'error');
  const server = await startServer(
    { port: 0, maxStreams: 16, maxStreamsPerClient: 16, maxPendingSocketsPerClient: 16, rateLimitPerMinute: 0, dataDir: await mkdtemp(join(tmpdir(), 'bench-sched-')) },
    { engine, log: quiet, extensions: [(ctx) => createBatchApi(ctx)] },
  );
  const results: Record<string, unknown> = {};
  try {
    // 1. one stream alone / with a 400-image job running, windows alternating; the job runs through all of them
    const alone: LoadResult[] = [];
    const withJob: LoadResult[] = [];
    const jobRates: number[] = [];
    const stream = () => loadFromChild(server, 1, seconds, STREAM, 0, { start: { degrade: false } });
    for (let w = 0; w < windows; w++) {
      alone.push(await stream());
      const job = await json(`${server.url}/v1/jobs`, { method: 'POST', body: JSON.stringify(JOB) });
      const id = String(job['id']);
      while ((await json(`${server.url}/v1/jobs/${id}`))['status'] !== 'processing') await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 500)); // the job's first calls are on their way
      const before = await imagesDone(server, id);
      const t0 = performance.now();
      withJob.push(await stream());
      jobRates.push(((await imagesDone(server, id)) - before) / ((performance.now() - t0) / 1000));
      await fetch(`${server.url}/v1/jobs/${id}`, { method: 'DELETE' });
      while (!['canceled', 'succeeded', 'failed'].includes(String((await json(`${server.url}/v1/jobs/${id}`))['status']))) await new Promise((r) => setTimeout(r, 50));
    }
    const row = (name: string, runs: LoadResult[]) => {
      const fps = summarize(runs.map((r) => r.fps));
      const lat = summarize(runs.flatMap((r) => r.serverLatency));
      const client = summarize(runs.flatMap((r) => r.clientLatency));
      log(`| ${name} | ${fmt(fps.mean, 1)} | ${fmt(lat.median, 1)} / ${fmt(lat.p95, 1)} ms | ${fmt(client.median, 1)} / ${fmt(client.p95, 1)} ms |`);
      return { fps, server_latency_ms: lat, client_latency_ms: client };
    };
    log(`### One stream alone and beside a 400-image job (${windows} windows of ${seconds} s each, alternating; client in another process)\n`);
    log('| case | stream fps | latency p50 / p95 (server) | latency p50 / p95 (client) |');
    log('| --- | --- | --- | --- |');
    const a = row('stream alone', alone);
    const j = row('stream + 400-image job', withJob);
    const rate = summarize(jobRates);
    const fpsRatio = j.fps.mean / a.fps.mean;
    const p95Ratio = j.server_latency_ms.p95 / a.server_latency_ms.p95;
    log(`\nJob throughput during the stream's windows: ${fmt(rate.mean, 2)} images/s (windows: ${jobRates.map((x) => fmt(x, 2)).join(', ')}).`);
    log(`Stream fps with the job / alone: ${pct(fpsRatio)} (target >= 90%: ${fpsRatio >= 0.9 ? 'met' : 'NOT met'}); latency p95 with / alone: ${fmt(p95Ratio, 2)}x (target <= 1.2x: ${p95Ratio <= 1.2 ? 'met' : 'NOT met'}); the job progressed: ${rate.mean > 0 ? 'yes' : 'NO'}.`);
    results['job'] = { alone: a, with_job: j, job_images_per_second: rate, fps_ratio: fpsRatio, p95_ratio: p95Ratio };

    // 2. more streams than the full model serves at their target: cameras at 15 fps, the valve on and off
    // enough streams that the full model cannot serve them all at the target: 1.3x the stream-alone rate
    const target = 15;
    const streams = Math.max(2, Math.ceil((1.3 * a.fps.mean) / target));
    const overload: Record<string, unknown> = {};
    log(`\n### ${streams} streams, each sent at ${target} fps with target_fps ${target} (valve off, then on; ${VALVE_SETTLE_S} s to settle, then ${seconds} s measured)\n`);
    log('| valve | fps per stream (mean) | latency p50 / p95 (server) | what the frames got |');
    log('| --- | --- | --- | --- |');
    for (const degrade of [false, true]) {
      await new Promise((r) => setTimeout(r, CAPACITY_WINDOW_MS)); // the previous streams' load leaves admission's window
      const r = await loadFromChild(server, streams, seconds, STREAM, 0, { start: { target_fps: target, degrade }, sendFps: target, warmupSeconds: VALVE_SETTLE_S }).catch((error: Error) => error);
      if (r instanceof Error) {
        const refused = /cannot serve[^"]*/.exec(r.message)?.[0];
        log(`| ${degrade ? 'on' : 'off'} | refused at admission: ${refused ?? r.message.slice(0, 200)} | | |`);
        overload[degrade ? 'valve_on' : 'valve_off'] = { refused: refused ?? r.message };
        continue;
      }
      const lat = summarize(r.serverLatency);
      const perStream = r.fps / streams;
      const got = Object.entries(r.applied).map(([k, n]) => `${k}: ${n}`).join(', ');
      log(`| ${degrade ? 'on' : 'off'} | ${fmt(perStream, 1)} | ${fmt(lat.median, 1)} / ${fmt(lat.p95, 1)} ms | ${got} |`);
      overload[degrade ? 'valve_on' : 'valve_off'] = { fps_per_stream: perStream, server_latency_ms: lat, applied: r.applied };
    }
    results['overload'] = overload;
    const on = overload['valve_on'] as { applied?: Record<string, number> } | undefined;
    if (on?.applied) results['accuracy_cost'] = await accuracyCost(engine, on.applied, quick ? 32 : 96, log);
    log('\nFigures from a shared, loaded machine (other jobs run beside the benchmark): compare the ratios of one run, not absolute values across runs.');
  } finally {
    await server.close();
  }
  return results;
}

/**
 * The evaluator's accuracy of what the frames got, against what they asked for: each (expert, steps) the valve
 * applied renders the pack's held-out prompts (txt2img, the caption's seed, CFG full 2 as the experts bench), and
 * the accuracies are weighted by the frames that got each; skipped frames repeat an earlier output and are left out.
 */
async function accuracyCost(engine: Engine, applied: Record<string, number>, prompts: number, log: (line: string) => void): Promise<Record<string, unknown>> {
  const spec = await loadSceneSpec(engine.pack.dir);
  const items = (await loadHeldOut(engine.pack.dir)).slice(0, prompts);
  const score = async (expert: string, steps: number) => {
    const scores = [];
    for (const item of items) {
      const params = parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps, guidance: 'full', guidance_scale: 2, expert });
      const [img] = await txt2img(engine, params, 1);
      scores.push(scoreImage(spec, { data: tensorToRgb8(img!.data, img!.width, img!.height), width: img!.width, height: img!.height }, item.attributes));
    }
    return overall(accuracy(scores));
  };
  const asked = await score(engine.variants.experts ? engine.variants.experts.experts.find((e) => e.relativeMacs === 1)?.name ?? 'full' : 'full', STREAM.steps);
  let weighted = 0;
  let frames = 0;
  const rows: string[] = [];
  for (const [kind, n] of Object.entries(applied)) {
    const m = /^(.+)\/(\d+) steps$/.exec(kind);
    if (!m) continue; // skipped
    const acc = await score(m[1]!, Number(m[2]));
    weighted += acc * n;
    frames += n;
    rows.push(`${kind}: ${fmt(100 * acc, 1)}% (${n} frames)`);
  }
  const got = frames > 0 ? weighted / frames : asked;
  log(`\nAccuracy cost of the degradation applied (evaluator, mean of background / colour / shape / position over ${items.length} held-out prompts rendered with each configuration the frames got; txt2img, CFG full 2): as asked (full, ${STREAM.steps} steps) ${fmt(100 * asked, 1)}%; weighted by the frames that ran the models ${fmt(100 * got, 1)}% (${rows.join('; ')}): ${fmt(100 * (got - asked), 1)} points.`);
  return { prompts: items.length, asked, got, points: 100 * (got - asked) };
}

/**
 * Cluster benchmarks on loopback: redis-server and node processes as `npm start -- --redis ...` starts them.
 *   1. Batch job throughput: one node without Redis, then a gateway with 1, 2 and 3 workers (the same jobs).
 *   2. The gateway's relay: a stream straight to a worker against the same stream through a gateway.
 *   3. Failover: a stream's worker killed with SIGKILL (its socket closes) and stopped with SIGSTOP (silent:
 *      only its heartbeat tells), from the signal to the client's first output from the next worker.
 * Every process shares this machine's cores: more workers add processes, not cores.
 */
import { cpus, loadavg } from 'node:os';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { loadSceneSpec } from '../../pipelines/evaluation/evaluator.ts';
import { eventually, outputArrivals, resumedAfter, startNode, startRedis, type ClusterNodeProcess, type RedisServer } from '../helpers/cluster.ts';
import { drawScenePng } from '../helpers/scenes.ts';
import { StreamClient } from '../helpers/stream-client.ts';
import { fmt, ms, summarize, type Summary } from './stats.ts';

export interface ClusterBenchOptions {
  readonly quick: boolean;
  readonly rounds: number;
  readonly log: (line: string) => void;
}

type Json = Record<string, unknown>;
const JOB = { kind: 'images', count: 2, lanes: 1, prompt: 'a large red circle in the centre on a blue background', width: 64, height: 64, steps: 2 };
const STREAM = { params: { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, similarity_threshold: 1 }, window: 2 };

async function getJson(url: string): Promise<Json> {
  return (await (await fetch(url)).json()) as Json;
}

/** Submits `n` jobs and waits for all: seconds from the first POST to the last completion. */
async function runJobs(base: string, n: number, seed: number): Promise<number> {
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...JOB, seed: seed + i }) });
    ids.push(((await res.json()) as Json)['id'] as string);
  }
  await eventually(async () => {
    const jobs = new Map(((await getJson(`${base}/v1/jobs?limit=100`))['jobs'] as Json[]).map((j) => [j['id'], j['status']]));
    if (ids.some((id) => jobs.get(id) === 'failed')) throw new Error('a job failed');
    return ids.every((id) => jobs.get(id) === 'succeeded') ? true : undefined;
  }, 600_000, 100);
  return (performance.now() - t0) / 1000;
}

/** Sequential round trips (send a frame, wait for the output it brings) and, with 2 frames in flight, outputs per second. */
async function streamCost(base: string, frames: readonly Buffer[], count: number): Promise<{ perFrame: number[]; fps: number }> {
  const client = await StreamClient.connect(base, STREAM);
  for (let i = 0; i < 3; i++) await client.roundTrip(frames[i % frames.length]!); // priming
  const perFrame: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await client.roundTrip(frames[i % frames.length]!);
    perFrame.push(performance.now() - t0);
  }
  const before = client.frames.length;
  const t0 = performance.now();
  let k = 0;
  client.sendFrame(frames[k++ % frames.length]!);
  while (client.frames.length - before < count) {
    const seen = client.frames.length;
    client.sendFrame(frames[k++ % frames.length]!);
    await client.until(() => client.frames.length > seen, 30_000);
  }
  const fps = (client.frames.length - before) / ((performance.now() - t0) / 1000);
  await client.close();
  return { perFrame, fps };
}

export async function benchCluster({ quick, rounds, log }: ClusterBenchOptions): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  const nodes: ClusterNodeProcess[] = [];
  let redis: RedisServer | undefined;
  const start = async (options: Parameters<typeof startNode>[0]) => {
    const node = await startNode(options);
    nodes.push(node);
    return node;
  };
  try {
    redis = await startRedis();
    const url = redis.url;
    const registered = (api: ClusterNodeProcess, id: string) => eventually(async () => (((await getJson(`${api.url}/v1/cluster`))['nodes'] as Json[]).some((n) => n['id'] === id) ? true : undefined));

    // 1. job throughput
    const jobs = quick ? 12 : 30;
    const passes = quick ? 1 : 2;
    log(`Load average when the section started: ${loadavg().map((l) => l.toFixed(1)).join(', ')} (other work on this machine shares its cores).\n`);
    log(`### Batch jobs: ${jobs} jobs of 2 images (64x64, 2 steps) per pass, ${passes} pass(es) per case after an untimed one, median`);
    log(`This machine has ${cpus().length} cores shared by every process: extra workers show the cluster's overhead, not a speed-up; with a machine per worker the work would spread.\n`);
    log('| case | s per pass | images/s |\n| --- | --- | --- |');
    const throughput: Record<string, { seconds: Summary; images_per_s: number }> = {};
    const measure = async (name: string, base: string) => {
      await runJobs(base, 3, 10_000); // untimed: a fresh node's first model runs are slow
      const times: number[] = [];
      for (let p = 0; p < passes; p++) times.push(await runJobs(base, jobs, 100 * p));
      const s = summarize(times);
      throughput[name] = { seconds: s, images_per_s: (jobs * 2) / s.median };
      log(`| ${name} | ${fmt(s.median, 1)} | ${fmt((jobs * 2) / s.median, 1)} |`);
    };
    const single = await start({});
    await measure('one node, no Redis', single.url);
    await single.kill();
    const api = await start({ role: 'api', redis: url });
    const workers: ClusterNodeProcess[] = [];
    for (const n of [1, 2, 3]) {
      const w = await start({ role: 'worker', redis: url });
      workers.push(w);
      await registered(api, w.id);
      await measure(`gateway + ${n} worker${n > 1 ? 's' : ''}`, api.url);
    }
    results['jobs'] = throughput;
    for (const w of workers.slice(1)) await w.kill();
    const worker = workers[0]!;

    // 2. relay overhead: the same stream straight to the worker and through the gateway, interleaved
    const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
    const frames = await Promise.all(
      (['left', 'centre', 'right'] as const).map((position) => drawScenePng(spec, { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position }] })),
    );
    const count = quick ? 20 : 60;
    const samples: Record<'direct' | 'relayed', { perFrame: number[]; fps: number[] }> = { direct: { perFrame: [], fps: [] }, relayed: { perFrame: [], fps: [] } };
    const relayRounds = Math.max(2, Math.round(rounds / 5));
    for (let r = 0; r < relayRounds; r++) {
      for (const mode of r % 2 === 0 ? (['direct', 'relayed'] as const) : (['relayed', 'direct'] as const)) {
        const cost = await streamCost(mode === 'direct' ? worker.url : api.url, frames, count);
        samples[mode].perFrame.push(...cost.perFrame);
        samples[mode].fps.push(cost.fps);
      }
    }
    const direct = summarize(samples.direct.perFrame);
    const relayed = summarize(samples.relayed.perFrame);
    const fps = { direct: summarize(samples.direct.fps).median, relayed: summarize(samples.relayed.fps).median };
    log(`\n### Relay: one stream (128x128, 2 steps) straight to a worker vs through a gateway, ${relayRounds} interleaved rounds of ${count} frames`);
    log('| path | round trip per frame | fps (2 frames in flight) |\n| --- | --- | --- |');
    log(`| direct to the worker | ${ms(direct)} | ${fmt(fps.direct, 1)} |`);
    log(`| through the gateway | ${ms(relayed)} | ${fmt(fps.relayed, 1)} |`);
    log(`\nRelay overhead: ${fmt(relayed.median - direct.median)} ms per frame (median), ${fmt(fps.direct - fps.relayed, 1)} fps.`);
    results['relay'] = { direct, relayed, fps, overhead_ms: relayed.median - direct.median };

    // 3. failover: a stream whose worker is killed (or frozen); a new worker replaces it each time
    const spare = await start({ role: 'worker', redis: url });
    await registered(api, spare.id);
    const client = await StreamClient.connect(api.url, STREAM);
    const arrivals = outputArrivals(client.ws);
    const sending = setInterval(() => client.sendFrame(frames[0]!), 50);
    const failover: Record<'kill' | 'stop', number[]> = { kill: [], stop: [] };
    const trials: ('kill' | 'stop')[] = [...Array.from({ length: quick ? 4 : 10 }, () => 'kill' as const), ...Array.from({ length: quick ? 2 : 4 }, () => 'stop' as const)];
    try {
      for (const how of trials) {
        await client.until(() => client.frames.length > 3, 30_000);
        const entry = ((await getJson(`${api.url}/v1/cluster`))['streams'] as Json[])[0]!;
        const victim = nodes.find((n) => n.id === entry['worker'])!;
        const since = Date.now();
        if (how === 'kill') await victim.kill();
        else victim.process.kill('SIGSTOP');
        const resumed = await eventually(async () => resumedAfter(api, client.streamId, arrivals, since), 30_000, 10);
        failover[how].push(resumed.ms);
        if (how === 'stop') await victim.kill();
        await registered(api, (await start({ role: 'worker', redis: url })).id);
      }
    } finally {
      clearInterval(sending);
      await client.close();
    }
    const kill = summarize(failover.kill);
    const stop = summarize(failover.stop);
    const p95 = (v: number[]) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.ceil(0.95 * v.length) - 1)]!;
    log(`\n### Failover: from the signal to the client's first output from the next worker (one stream, 20 frames/s)`);
    log('| worker | trials | p50 | p95 | max |\n| --- | --- | --- | --- | --- |');
    log(`| killed (SIGKILL: its socket closes) | ${kill.n} | ${fmt(kill.median, 0)} ms | ${fmt(p95(failover.kill), 0)} ms | ${fmt(Math.max(...failover.kill), 0)} ms |`);
    log(`| frozen (SIGSTOP: only the heartbeat tells) | ${stop.n} | ${fmt(stop.median, 0)} ms | ${fmt(p95(failover.stop), 0)} ms | ${fmt(Math.max(...failover.stop), 0)} ms |`);
    results['failover'] = { kill_ms: failover.kill, stop_ms: failover.stop, kill_p50: kill.median, kill_p95: p95(failover.kill), stop_p50: stop.median, stop_p95: p95(failover.stop) };
    log(`\nA frozen worker is left once its heartbeat expires (1.5 s) and its stream has heard nothing for 1 s; the next worker was warmed up before it registered. Load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(', ')}.`);
  } finally {
    await Promise.all(nodes.map((n) => n.kill()));
    await redis?.stop();
  }
  return results;
}

/**
 * Cross-stream batching (server/batcher.ts): rows of one group (latent size + UNet variant) run together,
 * groups never mix, results come back to the request that sent them, and a failed call fails only the
 * request that broke it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { UnetBatcher } from '../../server/batcher.ts';
import { Engine } from '../../pipelines/engine.ts';
import { txt2img, type GeneratedImage } from '../../pipelines/generate.ts';
import { parseParams } from '../../pipelines/params.ts';
import type { UnetRow } from '../../models/components.ts';
import { FIXTURES, copyPack } from '../helpers/fixtures.ts';
import { currentUrgency, withUrgency } from '../../models/runtime/urgency.ts';

const dir = await copyPack();
await cp(join(FIXTURES, 'experts'), join(dir, 'experts'), { recursive: true });
const engine = await Engine.load(dir);

test('renders on different experts share the batcher and give the images each gives alone', async () => {
  const jobs = ['full', 'lite', 'half', 'lite', 'full'].map((expert, i) => parseParams({ prompt: `a red circle ${i}`, seed: 40 + i, steps: 2, guidance: 'full', guidance_scale: 1.5, expert }));
  const alone: GeneratedImage[] = [];
  for (const params of jobs) alone.push((await txt2img(engine, params, 1))[0]!);
  // together: every render's UNet calls go through one batcher, which groups rows by variant key
  const batcher = new UnetBatcher(16);
  const calls: string[] = [];
  const runners = (size: Parameters<typeof engine.unetRunner>[0], variant: Parameters<typeof engine.unetRunner>[1]) =>
    batcher.runner(size, variant!.key, (rows: readonly UnetRow[]) => {
      calls.push(`${variant!.key}:${rows.length}`);
      return variant!.unet.predict(rows, size.latentHeight, size.latentWidth);
    });
  const together = await Promise.all(jobs.map(async (params) => (await txt2img(engine, params, 1, { runners }))[0]!));
  assert.ok(calls.some((c) => Number(c.split(':')[1]) > 2), `renders of one expert should share calls: ${calls.join(' ')}`);
  together.forEach((img, i) => {
    const diff = img.data.reduce((m, v, k) => Math.max(m, Math.abs(v - alone[i]!.data[k]!)), 0);
    assert.ok(diff < 1e-4, `render ${i} (${jobs[i]!.expert}): max diff ${diff}`);
  });
  // and the experts really are different networks
  assert.ok(alone[0]!.data.some((v, i) => Math.abs(v - alone[1]!.data[i]!) > 1e-3));
});

test('a failed batched UNet call is retried request by request, so one poisoned request fails alone', async () => {
  const batcher = new UnetBatcher(16);
  const size = engine.size({});
  let calls = 0;
  const execute = async (rows: readonly UnetRow[]) => {
    calls++;
    if (rows.some((r) => Number.isNaN(r.sample[0]))) throw new Error('poisoned row');
    return rows.map((r) => r.sample);
  };
  const runner = batcher.runner(size, 'k', execute);
  const row = (v: number): UnetRow => ({ sample: Float32Array.of(v), timestep: 1, context: new Float32Array(1) });
  const first = runner([row(1)]); // runs alone at once
  const results = await Promise.allSettled([runner([row(2)]), runner([row(Number.NaN)]), runner([row(3)])]);
  await first;
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal((results[2] as PromiseFulfilledResult<Float32Array[]>).value[0]![0], 3);
  assert.equal(calls, 1 + 1 + 3); // alone, the failed batch of three, then each of the three again
});

test('with batching off (1 row set per call) requests go straight on: a second call starts before the first ends', async () => {
  const batcher = new UnetBatcher(1);
  const started: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const execute = async (rows: readonly UnetRow[]) => {
    started.push(rows[0]!.sample[0]!);
    await gate;
    return rows.map((r) => r.sample);
  };
  const runner = batcher.runner(engine.size({}), 'k', execute);
  const row = (v: number): UnetRow => ({ sample: Float32Array.of(v), timestep: 1, context: new Float32Array(1) });
  const calls = [runner([row(1)]), runner([row(2)])];
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(started, [1, 2], 'both calls are with the model at once (its worker queue orders them)');
  release();
  assert.deepEqual((await Promise.all(calls)).map((eps) => eps[0]![0]), [1, 2]);
  assert.equal(batcher.waiting, 0);
});

test('rows per call come from the measured cost table: a batch grows while the cost per row falls, trying new sizes one step at a time', async () => {
  // a UNet whose call costs 10 ms for 2 rows, 15 for 4 (3.75 per row: worth it), 30 for 6 (5 per row: not)
  let clock = 0;
  const cost: Record<number, number> = { 2: 10, 4: 15, 6: 30, 8: 40 };
  const calls: number[] = [];
  let gate: Promise<void> = Promise.resolve();
  const execute = async (rows: readonly UnetRow[]) => {
    calls.push(rows.length);
    await gate;
    clock += cost[rows.length]!;
    return rows.map((r) => r.sample);
  };
  const batcher = new UnetBatcher(16, undefined, () => clock);
  const runner = batcher.runner(engine.size({}), 'k', execute);
  const request = () => runner([0, 1].map((v) => ({ sample: Float32Array.of(v), timestep: 1, context: new Float32Array(1) })));
  // each round: one call in flight while three requests of 2 rows wait, then everything runs
  for (let round = 0; round < 4; round++) {
    let release!: () => void;
    gate = new Promise((r) => (release = r));
    const all = [request(), request(), request(), request()];
    release();
    await Promise.all(all);
    await new Promise((r) => setImmediate(r)); // the batcher is idle again
  }
  // round 1 measures 2 rows and tries 4; round 2 finds 4 pays and tries 6; from round 3 on 6 is known not to pay
  assert.deepEqual(calls, [2, 4, 2, 2, 6, 2, 4, 2, 2, 4, 2]);
  assert.equal(batcher.costs.perRow('16x16|k', 4), 15 / 4);
});

// --- urgency (models/runtime/urgency.ts): the batcher orders and forms calls by the dispatcher's rule

/** A runner whose calls finish when the test says, recording each call's rows and the urgency it carried. */
function heldRunner(batcher: UnetBatcher) {
  const calls: { rows: number[]; class: string; finish: () => void }[] = [];
  const execute = (rows: readonly UnetRow[]) =>
    new Promise<Float32Array[]>((resolve) => {
      calls.push({ rows: rows.map((r) => r.sample[0]!), class: currentUrgency().class, finish: () => resolve(rows.map((r) => r.sample)) });
    });
  return { calls, runner: batcher.runner(engine.size({}), 'k', execute) };
}
const row = (v: number): UnetRow => ({ sample: Float32Array.of(v), timestep: 1, context: new Float32Array(1) });
const settle = () => new Promise((r) => setImmediate(r));

test('a live request leads the next call ahead of earlier background and interactive ones, lower classes never join a live call, and a live request starts beside a running lower-class call', async () => {
  const batcher = new UnetBatcher(16, undefined, undefined, 0);
  const { calls, runner } = heldRunner(batcher);
  const busy = withUrgency({ class: 'live', deadline: 1 }, () => runner([row(0)])); // occupies the UNet
  const done = [
    withUrgency({ class: 'background' }, () => runner([row(1)])),
    withUrgency({ class: 'interactive' }, () => runner([row(2)])),
    withUrgency({ class: 'live', deadline: 10 }, () => runner([row(3)])),
    withUrgency({ class: 'live', deadline: 5 }, () => runner([row(4)])),
  ];
  await settle();
  calls[0]!.finish();
  await busy;
  await settle();
  // both live rows lead (earliest deadline first); the interactive and background rows wait for their own calls
  assert.deepEqual(calls[1]!.rows, [4, 3]);
  assert.equal(calls[1]!.class, 'live');
  calls[1]!.finish();
  await settle();
  assert.deepEqual(calls[2]!.rows, [2], 'interactive before background, each on its own call');
  const late = withUrgency({ class: 'live', deadline: 20 }, () => runner([row(5)]));
  await settle();
  assert.deepEqual(calls[3]!.rows, [5], 'a live arrival starts beside the running interactive call (the dispatcher orders the two)');
  assert.equal(calls.length, 4, 'the background request still waits');
  calls[2]!.finish();
  calls[3]!.finish();
  await settle();
  assert.deepEqual(calls[4]!.rows, [1]);
  calls[4]!.finish();
  await Promise.all([...done, late]);
});

test('a batch led by a class owed its share carries the live rows of its group and runs as live', async () => {
  let t = 0;
  const batcher = new UnetBatcher(16, undefined, () => t, 0.5);
  const { calls, runner } = heldRunner(batcher);
  const first = withUrgency({ class: 'live', deadline: 100 }, () => runner([row(0)]));
  const bg = withUrgency({ class: 'background' }, () => runner([row(1)]));
  const live = withUrgency({ class: 'live', deadline: 50 }, () => runner([row(2)]));
  t = 10;
  calls[0]!.finish(); // background has had 0 of 10 ms: owed, it leads; the live row of its group joins
  await first;
  await settle();
  assert.deepEqual(calls[1]!.rows, [1, 2]);
  assert.equal(calls[1]!.class, 'live', 'the call carries its most urgent member to the dispatcher');
  calls[1]!.finish();
  await Promise.all([bg, live]);
});

test('while live streams are active, a background request is cut into calls that fit half the tightest live interval by the cost table', async () => {
  let t = 0;
  const batcher = new UnetBatcher(16, undefined, () => t, 0);
  const group = `${engine.size({}).latentHeight}x${engine.size({}).latentWidth}|k`;
  // measured: 1 row 4 ms, 2 rows 6 ms, 4 rows 9 ms, 8 rows 16 ms
  for (const [rows, ms] of [[1, 4], [2, 6], [4, 9], [8, 16]] as const) batcher.costs.record(group, rows, ms);
  const sizes: number[] = [];
  const runner = batcher.runner(engine.size({}), 'k', async (rows) => (sizes.push(rows.length), rows.map((r) => r.sample)));
  const eight = Array.from({ length: 8 }, (_, i) => row(i));
  // no live work: one call of all eight rows
  const alone = await withUrgency({ class: 'background' }, () => runner(eight));
  assert.deepEqual(sizes, [8]);
  // a live stream at 50 fps (20 ms): background calls must fit 10 ms, so 4 rows (9 ms) per call
  await withUrgency({ class: 'live', deadline: 40, interval: 20 }, () => runner([row(9)]));
  sizes.length = 0;
  const chunked = await withUrgency({ class: 'background' }, () => runner(eight));
  assert.deepEqual(sizes, [4, 4]);
  assert.deepEqual(chunked.map((e) => e[0]), alone.map((e) => e[0]), 'the rows come back whole and in order');
  // at 120 fps (8.3 ms: 4.2 ms fits) one row per call
  await withUrgency({ class: 'live', deadline: 40, interval: 1000 / 120 }, () => runner([row(9)]));
  sizes.length = 0;
  await withUrgency({ class: 'background' }, () => runner(eight));
  assert.deepEqual(sizes, [1, 1, 1, 1, 1, 1, 1, 1]);
  // an interactive render is not cut
  sizes.length = 0;
  await runner(eight);
  assert.deepEqual(sizes, [8]);
  t = 5000; // live work long gone: whole again
  sizes.length = 0;
  await withUrgency({ class: 'background' }, () => runner(eight));
  assert.deepEqual(sizes, [8]);
});

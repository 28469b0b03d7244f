/** The load valve (pipelines/load-valve.ts): the order of its rungs, when it moves, and what a degraded stream runs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { ladder, LoadValve, DEFAULT_VALVE, EAGER_THRESHOLD, RESTORE_WINDOWS, WINDOW_FRAMES } from '../../pipelines/load-valve.ts';
import { parseParams } from '../../pipelines/params.ts';
import { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { FIXTURES, copyPack } from '../helpers/fixtures.ts';

const COSTS = [1, 0.4987, 0.6902]; // the fixture's experts: full, half, lite

test('rungs in order: filter more eager, then each cheaper expert down to min_budget, then one step fewer at a time', () => {
  const params = parseParams({ steps: 3 });
  assert.deepEqual(ladder(params, COSTS, { degrade: true, minBudget: 0.5 }), [
    { kind: 'filter', params: { similarity_threshold: EAGER_THRESHOLD } },
    { kind: 'budget', params: { similarity_threshold: EAGER_THRESHOLD, budget: 0.6902 } },
    { kind: 'steps', params: { similarity_threshold: EAGER_THRESHOLD, budget: 0.6902, steps: 2 } },
    { kind: 'steps', params: { similarity_threshold: EAGER_THRESHOLD, budget: 0.6902, steps: 1 } },
  ]);
  // min_budget 0 reaches the cheapest expert
  assert.deepEqual(
    ladder(params, COSTS, DEFAULT_VALVE).filter((r) => r.kind === 'budget').map((r) => r.params.budget),
    [0.6902, 0.4987],
  );
});

test('what a stream pins is not a rung: degrade false, a forced expert or adapters, a raw t_index_list, a filter already eager, one step', () => {
  assert.deepEqual(ladder(parseParams({ steps: 3 }), COSTS, { degrade: false, minBudget: 0 }), []);
  assert.deepEqual(ladder(parseParams({ steps: 2, expert: 'half' }), COSTS, DEFAULT_VALVE).map((r) => r.kind), ['filter', 'steps']);
  assert.deepEqual(ladder(parseParams({ t_index_list: [20, 35], similarity_threshold: 0.5 }), COSTS, DEFAULT_VALVE).map((r) => r.kind), ['budget', 'budget']);
  assert.deepEqual(ladder(parseParams({ steps: 1, budget: 0.5 }), COSTS, DEFAULT_VALVE).map((r) => r.params), [{ similarity_threshold: EAGER_THRESHOLD }, { similarity_threshold: EAGER_THRESHOLD, budget: 0.4987 }]);
});

test('the valve goes down a rung after a window with over 20% late frames, up only after three calm windows in a row', () => {
  const rungs = ladder(parseParams({ steps: 2 }), [], DEFAULT_VALVE); // filter, steps 1
  const valve = new LoadValve(rungs);
  const window = (late: number, ms = 10) => {
    const moves = [];
    for (let i = 0; i < WINDOW_FRAMES; i++) moves.push(valve.observe(i < late ? 150 : ms, 100));
    return moves.filter((m) => m !== undefined);
  };
  assert.deepEqual(window(3), [], '3 of 15 late is 20%: not over');
  assert.deepEqual(window(4), ['down']);
  assert.equal(valve.level, 1);
  assert.deepEqual(valve.overrides, { similarity_threshold: EAGER_THRESHOLD });
  assert.deepEqual(window(15), ['down']);
  assert.deepEqual(valve.overrides, { similarity_threshold: EAGER_THRESHOLD, steps: 1 });
  assert.deepEqual(window(15), [], 'no rung below the last');
  // restore: calm windows (p90 under 60% of the budget) count; a window in between resets the count
  for (let i = 0; i < RESTORE_WINDOWS - 1; i++) assert.deepEqual(window(0), []);
  assert.deepEqual(window(0, 70), [], '70% of the budget is not calm: the count starts again');
  for (let i = 0; i < RESTORE_WINDOWS - 1; i++) assert.deepEqual(window(0), []);
  assert.deepEqual(window(0), ['up']);
  assert.equal(valve.level, 1);
});

test('a degraded stream runs the cheaper expert and fewer steps from the next frame, reports them per frame, keeps its own parameters; {} restores', async () => {
  const dir = await copyPack();
  await cp(join(FIXTURES, 'experts'), join(dir, 'experts'), { recursive: true });
  const engine = await Engine.load(dir);
  const params = parseParams({ prompt: 'a red circle', steps: 3, similarity_threshold: 1 });
  const stream = await StreamPipeline.create(engine, params);
  const frame = new Float32Array(3 * 128 * 128).fill(0.2);
  const first = (await stream.process([frame]))[0]!;
  assert.deepEqual([first.variant.expert, first.steps], ['full', 3]);
  await stream.degrade({ budget: 0.5, steps: 1 });
  const degraded = (await stream.process([frame]))[0]!;
  assert.deepEqual([degraded.variant.expert, degraded.steps], ['half', 1], 'budget 0.5: the largest expert within it');
  assert.deepEqual(stream.params, params, 'the stream keeps its own parameters');
  // an update while degraded changes the stream's own parameters, and the valve's stay laid over them
  await stream.update({ prompt: 'a blue square' });
  assert.equal(stream.params.prompt, 'a blue square');
  assert.equal(stream.params.steps, 3);
  assert.deepEqual(((await stream.process([frame]))[0]!).steps, 1);
  await stream.degrade({});
  const restored = (await stream.process([frame]))[0]!;
  assert.deepEqual([restored.variant.expert, restored.steps], ['full', 3]);
  await engine.close();
});

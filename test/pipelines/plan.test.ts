/** A request's plan (pipelines/plan.ts): worked out once, consistent, and nothing built when a parameter does not fit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { planRequest, type RunnerFactory } from '../../pipelines/plan.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';

const engine = await Engine.load(BASE_PACK);

test('a plan holds the size, schedule, guidance, prompt, variant and the runner made for them', async () => {
  const made: string[] = [];
  const runners: RunnerFactory = (size, variant) => {
    made.push(`${size.width}x${size.height}|${variant.key}`);
    return async (rows) => rows.map((r) => r.sample);
  };
  const params = parseParams({ prompt: 'a red circle', width: 96, height: 64, steps: 3, strength: 0.7, guidance: 'full', guidance_scale: 1.7 });
  const plan = await planRequest(engine, params, 'img2img', runners);
  assert.deepEqual([plan.size.width, plan.size.height], [96, 64]);
  assert.deepEqual(plan.coefficients.timesteps, engine.coefficients(params, 'img2img').timesteps);
  assert.deepEqual(plan.guidance, { kind: 'full', scale: 1.7 });
  assert.deepEqual(plan.prompt.cond, (await engine.embed('a red circle')).hidden);
  assert.equal(plan.variant.key, 'full');
  assert.deepEqual(made, ['96x64|full']);
  assert.deepEqual(await plan.runner([{ sample: Float32Array.of(1), timestep: 1, context: new Float32Array(1) }]), [Float32Array.of(1)]);
});

test('a parameter that does not fit the model fails the plan and builds no runner', async () => {
  let made = 0;
  const runners: RunnerFactory = () => {
    made++;
    return async () => [];
  };
  await assert.rejects(planRequest(engine, parseParams({ width: 104 }), 'txt2img', runners), /width must be a multiple of 16/);
  await assert.rejects(planRequest(engine, parseParams({ expert: 'e44' }), 'txt2img', runners), /no expert "e44"/);
  await assert.rejects(planRequest(engine, parseParams({ strength: 0.01, steps: 4 }), 'img2img', runners), /strength 0.01 leaves only/);
  assert.equal(made, 0);
});

/** A request's plan (pipelines/plan.ts): worked out once, consistent, and nothing built when a parameter does not fit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { fitRequest, planRequest, type RunnerFactory } from '../../pipelines/plan.ts';
import { render } from '../../pipelines/generate.ts';
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

test('fitting: a render out of the pack\'s size range runs within its training size\'s pixels and comes back at the size asked; a stream renders as asked', async () => {
  // the fixture pack trains at 128 (multiples of 16) and declares nothing: sides 64-256; 2:1 within 128 x 128 pixels is 160 x 80
  const big = await planRequest(engine, parseParams({ prompt: 'x', width: 512, height: 256 }), 'txt2img');
  assert.deepEqual([big.size.width, big.size.height, big.outputSize.width, big.outputSize.height], [160, 80, 512, 256]);
  assert.match(big.notes.join(), /512x256 is outside this model's size range 64-256: rendered at 160x80 and resized/);
  const [img] = await render(engine, big, 1);
  assert.deepEqual([img!.width, img!.height, img!.data.length], [512, 256, 3 * 512 * 256]);
  const strict = fitRequest(engine, parseParams({ width: 512, height: 256, strict_size: true }));
  assert.deepEqual([strict.size.width, strict.outputSize.width, strict.notes.length], [512, 512, 0]);
  const stream = fitRequest(engine, parseParams({ width: 512, height: 256 }), 'stream');
  assert.deepEqual([stream.size.width, stream.notes.length], [512, 0]);
});

test('fitting: guidance within the pack\'s range, the negative prompt\'s switch by flow, and the notes of both', async () => {
  const params = parseParams({ prompt: 'x', negative_prompt: 'y', guidance_scale: 4 });
  const rendered = await planRequest(engine, params, 'txt2img');
  assert.deepEqual(rendered.guidance, { kind: 'full', scale: 2 });
  assert.equal(rendered.notes.length, 2);
  assert.deepEqual(fitRequest(engine, params, 'stream').guidance, { kind: 'initialize', scale: 2, delta: 1 });
  assert.deepEqual(rendered.params, params, 'the plan keeps the parameters as asked (a stream merges updates into them)');
});

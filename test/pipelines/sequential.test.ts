/** Sequential denoising (pipelines/sequential.ts): one UNet call per step, each lane from its own noise. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { denoiseSequential } from '../../pipelines/sequential.ts';
import { enterRow, finishStep, planStep, type NoiseTable, type PromptContext } from '../../pipelines/denoise-step.ts';
import { makeGuidance } from '../../pipelines/rcfg.ts';
import { LcmScheduler } from '../../pipelines/schedulers/lcm.ts';
import { Generator } from '../../pipelines/random.ts';
import { fakeRunner } from '../helpers/fake-unet.ts';

const SIZE = 6;
const prompt: PromptContext = { cond: new Generator(1).randn(3), uncond: new Generator(2).randn(3) };
const latents = [new Generator(3).randn(SIZE), new Generator(4).randn(SIZE)];
const noise: NoiseTable = { rows: Array.from({ length: 6 }, (_, i) => new Generator(10 + i).randn(SIZE)), lanes: 2 };

test('n steps are n UNet calls over every lane; full guidance doubles the rows', async () => {
  const c = new LcmScheduler().coefficients([0, 16, 32]);
  const calls: number[] = [];
  await denoiseSequential(latents, c, makeGuidance('full', 1.5), prompt, noise, fakeRunner(calls));
  assert.deepEqual(calls, [4, 4, 4]);
  calls.length = 0;
  await denoiseSequential(latents, c, makeGuidance('initialize', 1.5, 1), prompt, noise, fakeRunner(calls));
  assert.deepEqual(calls, [4, 2, 2], 'initialize: one uncond row per lane at the first step only');
});

test('one step is exactly the first step of the step functions', async () => {
  const c = new LcmScheduler().coefficients([20]);
  const g = makeGuidance('none');
  const [out] = await denoiseSequential([latents[0]!], c, g, prompt, { rows: [noise.rows[0]!], lanes: 1 }, fakeRunner());
  const state = enterRow(c, g, { rows: [noise.rows[0]!], lanes: 1 }, latents[0]!, 0);
  const eps = await fakeRunner()(planStep([state], c, g, prompt));
  assert.deepEqual(out, finishStep([state], eps, c, g, { rows: [noise.rows[0]!], lanes: 1 }).denoised[0]);
});

/**
 * One denoising step (pipelines/denoise-step.ts): the exact entry of a latent, the UNet rows each guidance kind
 * asks for, and the step's output and re-noising, against the formulas written out (REFERENCE §1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { enterRow, finishStep, noiseFor, planStep, type NoiseTable, type PromptContext } from '../../pipelines/denoise-step.ts';
import { makeGuidance } from '../../pipelines/rcfg.ts';
import { LcmScheduler } from '../../pipelines/schedulers/lcm.ts';
import { Generator } from '../../pipelines/random.ts';
import { fakeEps } from '../helpers/fake-unet.ts';

const SIZE = 8;
const c = new LcmScheduler().coefficients([20, 45]);
const noise: NoiseTable = { rows: [new Generator(1).randn(SIZE), new Generator(2).randn(SIZE)], lanes: 1 };
const prompt: PromptContext = { cond: new Generator(3).randn(4), uncond: new Generator(4).randn(4) };
const z = new Generator(5).randn(SIZE);

test('a latent enters at step 0 as alpha_0 z + beta_0 noise_0', () => {
  const row = enterRow(c, makeGuidance('none'), noise, z, 0);
  assert.equal(row.step, 0);
  assert.equal(row.stock, undefined);
  for (let i = 0; i < SIZE; i++) assert.equal(row.x[i], Math.fround(c.alpha[0]! * z[i]! + c.beta[0]! * noise.rows[0]![i]!));
  // RCFG self starts its stock noise from the step's initial noise
  assert.equal(enterRow(c, makeGuidance('self', 1.2, 1), noise, z, 0).stock, noise.rows[0]);
});

test('UNet rows per guidance kind: none N, full 2N (uncond first), self N, initialize N + 1 for a step-0 row', () => {
  const states = [enterRow(c, makeGuidance('none'), noise, z, 0), { ...enterRow(c, makeGuidance('none'), noise, z, 0), step: 1 }];
  const rows = (kind: 'none' | 'full' | 'self' | 'initialize') => planStep(states, c, makeGuidance(kind, 1.5, 1), prompt);
  assert.equal(rows('none').length, 2);
  assert.equal(rows('self').length, 2);
  assert.equal(rows('initialize').length, 3);
  const full = rows('full');
  assert.equal(full.length, 4);
  assert.deepEqual(full.map((r) => r.context === prompt.uncond), [true, true, false, false]);
  assert.deepEqual(full.map((r) => r.timestep), [c.timesteps[0], c.timesteps[1], c.timesteps[0], c.timesteps[1]]);
  // a scale <= 1 cannot change eps: no extra rows
  assert.equal(planStep(states, c, makeGuidance('full', 1), prompt).length, 2);
});

test('a step gives the LCM output and re-noises it to the next timestep with the next initial noise', () => {
  const g = makeGuidance('none');
  const state = enterRow(c, g, noise, z, 0);
  const eps = fakeEps({ sample: state.x, timestep: c.timesteps[0]!, context: prompt.cond });
  const { denoised, next } = finishStep([state], [eps], c, g, noise);
  const x0 = (i: number) => (state.x[i]! - c.beta[0]! * eps[i]!) / c.alpha[0]!;
  for (let i = 0; i < SIZE; i++) {
    assert.ok(Math.abs(denoised[0]![i]! - (c.cOut[0]! * x0(i) + c.cSkip[0]! * state.x[i]!)) < 1e-6);
    assert.ok(Math.abs(next[0]!.x[i]! - (c.alpha[1]! * denoised[0]![i]! + c.beta[1]! * noiseFor(noise, 1, 0)[i]!)) < 1e-6);
  }
  assert.equal(next[0]!.step, 1);
  // the last step finishes the row
  const last = finishStep([next[0]!], [eps], c, g, noise);
  assert.equal(last.next[0], undefined);
});

test('finishStep rejects a prediction count that does not match the plan', () => {
  const g = makeGuidance('full', 2);
  const state = enterRow(c, g, noise, z, 0);
  assert.throws(() => finishStep([state], [z], c, g, noise), /expected 2 UNet predictions, got 1/);
});

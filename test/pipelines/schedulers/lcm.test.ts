import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LcmScheduler, lcmStep, parseSchedulerConfig, tIndexListForStrength } from '../../../pipelines/schedulers/lcm.ts';
import { ServiceError } from '../../../models/errors.ts';

// Golden values computed independently in numpy (float64) from SD's scaled_linear betas.
const close = (actual: number, expected: number, tol = 1e-9) => assert.ok(Math.abs(actual - expected) <= tol, `${actual} != ${expected}`);

test('the 50-step grid is 999 - 20 i, as StreamDiffusion indexes it', () => {
  const s = new LcmScheduler();
  assert.equal(s.grid.length, 50);
  assert.deepEqual(s.coefficients([32, 45]).timesteps, [359, 99]);
  assert.deepEqual(s.coefficients([0, 16, 32, 45]).timesteps, [999, 679, 359, 99]);
});

test('alphas and boundary scalings match hand-computed values', () => {
  const c = new LcmScheduler().coefficients([0, 12, 25, 37]);
  assert.deepEqual(c.timesteps, [999, 759, 499, 259]);
  close(c.alpha[0]!, 0.0682649142171675);
  close(c.beta[0]!, 0.9976672298351403);
  close(c.alpha[3]!, 0.8117730759829455);
  close(c.beta[3]!, 0.5839730071751493);
  close(c.cSkip[3]!, 3.726837564778493e-8, 1e-15);
  close(c.cOut[3]!, 0.999999981365812);
});

test('an LCM step equals c_out * (x - beta eps) / alpha + c_skip * x', () => {
  const s = new LcmScheduler();
  const x = Float32Array.of(1, -2, 0.5);
  const eps = Float32Array.of(0.1, 0.3, -0.2);
  const at259 = lcmStep(s.coefficients([37]), 0, x, eps);
  [1.15993341, -2.67955662, 0.75981161].forEach((v, i) => close(at259[i]!, v, 1e-6));
  // at t = 19 the skip connection matters: c_skip = 6.925e-6
  const at19 = lcmStep(s.coefficients([49]), 0, x, eps);
  [0.99555642, -2.05833795, 0.53139076].forEach((v, i) => close(at19[i]!, v, 1e-6));
});

test('the Turbo path (Euler config) is the pure x0 prediction', () => {
  const s = new LcmScheduler(parseSchedulerConfig({ _class_name: 'EulerDiscreteScheduler' }));
  const c = s.coefficients([0]);
  assert.equal(c.cSkip[0], 0);
  assert.equal(c.cOut[0], 1);
  const x = Float32Array.of(0.5);
  const eps = Float32Array.of(0.25);
  close(lcmStep(c, 0, x, eps)[0]!, (0.5 - 0.9976672298351403 * 0.25) / 0.0682649142171675, 1e-5);
});

test('strength maps to t_index_list on the grid', () => {
  assert.deepEqual(tIndexListForStrength(1, 4), [0, 12, 25, 37]);
  assert.deepEqual(tIndexListForStrength(0.35, 2), [32, 41]);
  assert.deepEqual(tIndexListForStrength(1, 1), [0]);
  assert.deepEqual(tIndexListForStrength(0.02, 1), [48]);
  assert.throws(() => tIndexListForStrength(0, 2), /strength must be in \(0, 1\]/);
  assert.throws(() => tIndexListForStrength(1.5, 2), ServiceError);
  assert.throws(() => tIndexListForStrength(0.02, 4), /fewer than steps/);
});

test('bad t_index_list and configs are rejected with the field named', () => {
  const s = new LcmScheduler();
  assert.throws(() => s.coefficients([]), /must not be empty/);
  assert.throws(() => s.coefficients([10, 5]), /strictly increasing/);
  assert.throws(() => s.coefficients([50]), /outside 0..49/);
  assert.throws(() => parseSchedulerConfig({ prediction_type: 'v_prediction' }), /prediction_type "v_prediction" is not supported/);
  assert.throws(() => parseSchedulerConfig({ beta_start: 'x' }), /beta_start must be a number/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guide, makeGuidance, needsUncondRow, nextStockNoise, usesStockNoise } from '../../pipelines/rcfg.ts';
import { LcmScheduler } from '../../pipelines/schedulers/lcm.ts';

const cond = Float32Array.of(0.5, -1, 2);
const uncond = Float32Array.of(0.1, 0.2, -0.3);
const stock = Float32Array.of(1, 0, -1);
const near = (a: Float32Array, b: number[]) => b.forEach((v, i) => assert.ok(Math.abs(a[i]! - v) < 1e-6, `${a[i]} != ${v} at ${i}`));

test('none returns the conditional prediction', () => {
  assert.equal(guide(makeGuidance('none'), cond, undefined, undefined).eps, cond);
});

test('full: eps_u + gamma (eps_c - eps_u)', () => {
  const { eps } = guide(makeGuidance('full', 1.5), cond, uncond, undefined);
  near(eps, [0.1 + 1.5 * 0.4, 0.2 + 1.5 * -1.2, -0.3 + 1.5 * 2.3]);
});

test('self: eps_u = delta * stock noise, no uncond row', () => {
  const g = makeGuidance('self', 2, 0.5);
  assert.equal(needsUncondRow(g, 0), false);
  const { eps, stock: kept } = guide(g, cond, undefined, stock);
  near(eps, [0.5 + 2 * (0.5 - 0.5), 0 + 2 * (-1 - 0), -0.5 + 2 * (2 + 0.5)]);
  assert.equal(kept, stock);
});

test('initialize: one uncond row at a frame\'s first step seeds the stock noise', () => {
  const g = makeGuidance('initialize', 2, 0.5);
  assert.equal(needsUncondRow(g, 0), true);
  assert.equal(needsUncondRow(g, 1), false);
  const { eps, stock: seeded } = guide(g, cond, uncond, stock);
  assert.equal(seeded, uncond);
  near(eps, [0.05 + 2 * (0.5 - 0.05), 0.1 + 2 * (-1 - 0.1), -0.15 + 2 * (2 + 0.15)]);
});

test('guidance scale <= 1 needs no extra rows and no stock noise', () => {
  assert.equal(needsUncondRow(makeGuidance('full', 1), 0), false);
  assert.equal(usesStockNoise(makeGuidance('self', 1)), false);
  assert.equal(guide(makeGuidance('full', 1), cond, undefined, undefined).eps, cond);
});

test('stock noise update: next = noise + LCMstep(eps, beta stock) * alpha_next / beta_next', () => {
  const c = new LcmScheduler().coefficients([32, 45]);
  const eps = Float32Array.of(0.3, -0.2, 0.1);
  const noise = Float32Array.of(0.01, 0.02, 0.03);
  const out = nextStockNoise(c, 0, eps, stock, noise);
  const [a0, b0, a1, b1] = [c.alpha[0]!, c.beta[0]!, c.alpha[1]!, c.beta[1]!];
  const expected = [0, 1, 2].map((i) => {
    const s = b0 * stock[i]!;
    const d = (c.cOut[0]! * (s - b0 * eps[i]!)) / a0 + c.cSkip[0]! * s;
    return noise[i]! + (d * a1) / b1;
  });
  near(out, expected);
  // after the last step the factor is 1
  const last = nextStockNoise(c, 1, eps, stock, noise);
  const expectedLast = [0, 1, 2].map((i) => {
    const s = b1 * stock[i]!;
    return noise[i]! + (c.cOut[1]! * (s - b1 * eps[i]!)) / a1 + c.cSkip[1]! * s;
  });
  near(last, expectedLast);
});

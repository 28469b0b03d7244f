import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blend, blendLinear, blendedNoise, slerp } from '../../pipelines/blending.ts';
import { Generator } from '../../pipelines/random.ts';

test('linear prompt blending is the weighted mean', () => {
  const out = blendLinear([
    { value: Float32Array.of(1, 0), weight: 3 },
    { value: Float32Array.of(0, 2), weight: 1 },
  ]);
  assert.deepEqual([...out], [0.75, 0.5]);
});

test('slerp: ends are the inputs, the middle keeps the norm of orthogonal unit vectors', () => {
  const a = Float32Array.of(1, 0);
  const b = Float32Array.of(0, 1);
  assert.deepEqual([...slerp(a, b, 0)].map((v) => Math.round(v * 1e6) / 1e6), [1, 0]);
  assert.deepEqual([...slerp(a, b, 1)].map((v) => Math.round(v * 1e6) / 1e6), [0, 1]);
  const mid = slerp(a, b, 0.5);
  assert.ok(Math.abs(Math.hypot(mid[0]!, mid[1]!) - 1) < 1e-6);
  assert.ok(Math.abs(mid[0]! - Math.SQRT1_2) < 1e-6);
  // a single prompt is returned as it is
  assert.equal(blend([{ value: a, weight: 1 }], 'slerp'), a);
});

test('seed blending: weight on one seed reproduces its noise; a mix keeps unit variance', () => {
  const [pure] = blendedNoise([{ value: 5, weight: 1 }, { value: 9, weight: 0 }], 1, 1000);
  assert.deepEqual(pure, new Generator(5).randn(1000));
  const [mixed] = blendedNoise([{ value: 5, weight: 1 }, { value: 9, weight: 1 }], 1, 100_000);
  const variance = mixed!.reduce((s, v) => s + v * v, 0) / mixed!.length;
  assert.ok(Math.abs(variance - 1) < 0.02, `variance ${variance}`);
  assert.deepEqual(blendedNoise([{ value: 5, weight: 1 }, { value: 9, weight: 1 }], 2, 10), blendedNoise([{ value: 5, weight: 1 }, { value: 9, weight: 1 }], 2, 10));
});

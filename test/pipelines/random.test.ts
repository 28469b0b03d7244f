import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator } from '../../pipelines/random.ts';

test('the same seed gives the same stream, another seed another', () => {
  assert.deepEqual(new Generator(7).randn(16), new Generator(7).randn(16));
  assert.notDeepEqual(new Generator(7).randn(16), new Generator(8).randn(16));
});

test('normals have mean 0 and variance 1', () => {
  const x = new Generator(3).randn(100_000);
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length;
  assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.02, `variance ${variance}`);
});

test('uniforms stay in [0, 1)', () => {
  const g = new Generator(0);
  for (let i = 0; i < 10_000; i++) {
    const u = g.uniform();
    assert.ok(u >= 0 && u < 1);
  }
});

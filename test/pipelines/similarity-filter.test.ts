import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimilarityFilter, skipProbability } from '../../pipelines/similarity-filter.ts';
import { Generator } from '../../pipelines/random.ts';
import { rgb8ToTensor } from '../../pipelines/codecs/image.ts';
import { cosineSimilarity, pixelCosineSimilarity } from '../../models/vector.ts';

test('skip probability is max(0, 1 - (1 - cos) / (1 - threshold))', () => {
  assert.equal(skipProbability(1, 0.98), 1);
  assert.ok(Math.abs(skipProbability(0.99, 0.98) - 0.5) < 1e-12);
  assert.ok(Math.abs(skipProbability(0.995, 0.98) - 0.75) < 1e-12);
  assert.equal(skipProbability(0.98, 0.98), 0);
  assert.equal(skipProbability(0.5, 0.98), 0);
  assert.equal(skipProbability(1, 1), 0); // threshold 1 disables the filter
});

test('identical frames are skipped, but never more than maxSkipFrames in a row', () => {
  const filter = new SimilarityFilter({ threshold: 0.98, maxSkipFrames: 3 }, new Generator(1));
  const frame = Float32Array.of(0.1, 0.2, 0.3);
  const decisions = Array.from({ length: 9 }, () => filter.check(frame).skip);
  // first frame always processed; then p = 1: skip 3, process 1, skip 3, process 1
  assert.deepEqual(decisions, [false, true, true, true, false, true, true, true, false]);
});

test('a different frame is always processed and becomes the new reference', () => {
  const filter = new SimilarityFilter({ threshold: 0.98, maxSkipFrames: 10 }, new Generator(1));
  filter.check(Float32Array.of(1, 0, 0));
  const d = filter.check(Float32Array.of(0, 1, 0));
  assert.equal(d.skip, false);
  assert.equal(d.similarity, 0);
  assert.equal(filter.check(Float32Array.of(0, 1, 0)).skip, true);
});

test('the skip rate follows the probability (seeded draws)', () => {
  const filter = new SimilarityFilter({ threshold: 0.98, maxSkipFrames: 1000 }, new Generator(42));
  const a = Float32Array.of(1, 0);
  // cos(a, b) = 0.99 -> p = 0.5; the reference stays `a` only while frames are skipped, so alternate
  const b = Float32Array.of(0.99, Math.sqrt(1 - 0.99 * 0.99));
  let skips = 0;
  for (let i = 0; i < 2000; i++) {
    filter.reset();
    filter.check(a);
    if (filter.check(b).skip) skips++;
  }
  assert.ok(skips > 900 && skips < 1100, `skips = ${skips}`);
});

test('RGB byte frames get exactly the decisions their float tensors get', () => {
  const g = new Generator(9);
  const base = Uint8Array.from({ length: 32 * 32 * 3 }, () => Math.floor(g.uniform() * 256));
  // frames drifting away from the first a little at a time: similarities from ~1 down past the threshold
  const frames = Array.from({ length: 40 }, (_, k) => base.map((v, i) => (i % 40 < k ? 255 - v : v)));
  const floats = frames.map((f) => rgb8ToTensor(f, 32, 32));
  for (const [i, f] of frames.entries()) assert.equal(pixelCosineSimilarity(frames[0]!, f), cosineSimilarity(floats[0]!, floats[i]!));
  const onBytes = new SimilarityFilter({ threshold: 0.9, maxSkipFrames: 3 }, new Generator(4));
  const onFloats = new SimilarityFilter({ threshold: 0.9, maxSkipFrames: 3 }, new Generator(4));
  const decisions = frames.map((f, i) => [onBytes.check(f), onFloats.check(floats[i]!)] as const);
  for (const [a, b] of decisions) assert.deepEqual(a, b);
  assert.ok(decisions.some(([a]) => a.skip) && decisions.some(([a]) => !a.skip && a.similarity !== undefined));
});

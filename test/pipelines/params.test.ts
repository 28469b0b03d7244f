import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SEED, mergeParams, parseParams, parseRequestParams } from '../../pipelines/params.ts';
import type { ServiceError } from '../../models/errors.ts';

test('defaults are filled in and documented values hold', () => {
  const p = parseParams({});
  assert.equal(p.guidance, 'self');
  assert.equal(p.guidance_scale, 1.2);
  assert.equal(p.delta, 1);
  assert.equal(p.similarity_threshold, 0.98);
  assert.equal(p.max_skip_frames, 10);
  assert.equal(p.budget, 1);
  assert.deepEqual(p.adapters, []);
});

test('a live update changes only the given fields; null clears an optional one', () => {
  const p = parseParams({ prompt: 'a', expert: 'small', t_index_list: [10, 30] });
  const q = mergeParams(p, { prompt: 'b', expert: null });
  assert.equal(q.prompt, 'b');
  assert.equal(q.expert, undefined);
  assert.deepEqual(q.t_index_list, [10, 30]);
  assert.equal(mergeParams(q, { t_index_list: null }).t_index_list, undefined);
  // a new steps or strength drops an older raw t_index_list
  assert.equal(mergeParams(q, { strength: 0.5 }).t_index_list, undefined);
  assert.throws(() => mergeParams(p, { prompt: null }), /prompt/);
  assert.throws(() => mergeParams(p, [] as unknown), /must be a JSON object/);
});

test('out-of-range and unknown parameters name the field', () => {
  assert.throws(() => parseParams({ strength: 1.5 }), (e: ServiceError) => e.code === 'bad_request' && e.field === 'strength');
  assert.throws(() => parseParams({ steps: 0 }), (e: ServiceError) => e.field === 'steps');
  assert.throws(() => parseParams({ guidance: 'sometimes' }), (e: ServiceError) => e.field === 'guidance');
  assert.throws(() => parseParams({ width: 100 }), (e: ServiceError) => e.field === 'width' && /multiple of 8/.test(e.message));
  assert.throws(() => parseParams({ cfg_scal: 3 }), (e: ServiceError) => /unknown field\(s\): cfg_scal/.test(e.message));
  assert.throws(() => parseParams({ prompt: 'x'.repeat(5000) }), (e: ServiceError) => e.field === 'prompt');
});

test('a request without a seed, or with -1, gets a random one; library parsing keeps the default', () => {
  const seeds = new Set(Array.from({ length: 8 }, () => parseRequestParams({ prompt: 'a' }).seed));
  assert.ok(seeds.size > 1, 'different draws');
  for (const s of seeds) assert.ok(Number.isInteger(s) && (s as number) >= 0 && (s as number) <= MAX_SEED);
  assert.notEqual(parseRequestParams({ seed: -1 }).seed, -1);
  assert.equal(parseRequestParams({ seed: 9 }).seed, 9);
  assert.deepEqual(parseRequestParams({ seed: [{ seed: 1, weight: 1 }] }).seed, [{ seed: 1, weight: 1 }]);
  assert.equal(parseParams({}).seed, 2);
  assert.throws(() => parseParams({ seed: -1 }), /seed/, 'only requests draw');
  const p = parseParams({ seed: 4 });
  assert.notEqual(mergeParams(p, { seed: -1 }).seed, -1, 'an update may ask for a new random seed');
  assert.equal(mergeParams(p, { prompt: 'b' }).seed, 4);
  assert.deepEqual([parseParams({}).strict_guidance, parseParams({}).strict_size], [false, false]);
});

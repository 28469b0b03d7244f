import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeParams, parseParams } from '../../pipelines/params.ts';

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

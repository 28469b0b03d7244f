import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseRenderSize } from '../../pipelines/render-size.ts';

const rules = { range: [128, 160] as const, trainingSize: 128, multiple: 32 };

test('a size in range renders as asked', () => {
  assert.deepEqual(chooseRenderSize(160, 128, rules, { strict_size: false }), { width: 160, height: 128, notes: [] });
});

test('out of range: the size a stream of that shape gets (closest aspect within the training size\'s pixels), and a note; strict renders as asked', () => {
  const square = chooseRenderSize(512, 512, rules, { strict_size: false });
  assert.deepEqual([square.width, square.height], [128, 128]);
  assert.match(square.notes[0]!, /512x512 is outside this model's size range 128-160: rendered at 128x128 and resized/);
  const wide = chooseRenderSize(512, 256, rules, { strict_size: false });
  assert.deepEqual([wide.width, wide.height], [128, 64]);
  const tall = chooseRenderSize(512, 768, rules, { strict_size: false });
  assert.deepEqual([tall.width, tall.height], [96, 160], '2:3 -> the closest aspect on the grid (3:5), not 96x128 (3:4)');
  const small = chooseRenderSize(64, 64, rules, { strict_size: false });
  assert.deepEqual([small.width, small.height], [128, 128], 'too small: up to the training size');
  assert.deepEqual(chooseRenderSize(512, 512, rules, { strict_size: true }), { width: 512, height: 512, notes: [] });
  assert.deepEqual([chooseRenderSize(1024, 64, rules, { strict_size: false }).height], [32], 'never below one multiple');
});

test('a size the aspect rule picks renders as it is, though a side is outside the range (16:9 -> 160x96)', () => {
  assert.deepEqual(chooseRenderSize(160, 96, rules, { strict_size: false }), { width: 160, height: 96, notes: [] });
  assert.deepEqual(chooseRenderSize(96, 160, rules, { strict_size: false }), { width: 96, height: 160, notes: [] });
});

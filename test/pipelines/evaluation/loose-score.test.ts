import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadSceneSpec, type SceneAttributes, type SceneObject } from '../../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { inferBackground, loadLooseSet, looseAccuracy, scoreLoose, type Expectation } from '../../../pipelines/evaluation/loose-score.ts';
import { drawScene } from '../../helpers/scenes.ts';

const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
const POSITIONS = ['left', 'right', 'top', 'bottom', 'centre'];

/** A full scene for a loose expectation: what the prompt leaves open is filled in (distinct positions, small sizes). */
function complete(e: Expectation, salt: number): SceneAttributes {
  const bg = e.background;
  const background: SceneAttributes['background'] =
    bg === null ? { kind: 'plain', color: ['white', 'black'].find((c) => !e.objects.some((o) => o.color === c))! }
    : bg.kind === 'plain' ? bg
    : { ...bg, direction: bg.direction ?? (salt % 2 ? 'vertical' : 'horizontal') };
  const free = POSITIONS.filter((p) => !e.objects.some((o) => o.position === p));
  const objects = e.objects.map((o, i): SceneObject => ({
    shape: o.shape, color: o.color, size: o.size ?? (e.objects.length > 1 ? 'small' : 'large'), position: o.position ?? free[(salt + i) % free.length]!,
  }));
  return { background, objects };
}

test('every held-out loose prompt drawn by an independent renderer scores all right', async () => {
  const set = (await loadLooseSet(EMBEDDED_PACK_DIR))!;
  assert.ok(set.items.length >= 300 && set.items.some((i) => i.kind === 'loose2'));
  const scores = await Promise.all(set.items.filter((_, i) => i % 3 === 0).map(async (item, i) => scoreLoose(spec, await drawScene(spec, complete(item.expect, i)), item.expect)));
  const acc = looseAccuracy(scores);
  assert.equal(acc.allRight, 1, JSON.stringify(acc));
  assert.equal(acc.shape, 1, JSON.stringify(acc));
  assert.equal(acc.position, 1, JSON.stringify(acc));
});

test('a missing object, a wrong colour and a wrong background are each caught', async () => {
  const expect: Expectation = { background: { kind: 'plain', color: 'blue' }, objects: [{ color: 'red', shape: 'circle', size: null, position: null }] };
  const right = await drawScene(spec, { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'top' }] });
  assert.equal(scoreLoose(spec, right, expect).allRight, true);
  const empty = await drawScene(spec, { background: { kind: 'plain', color: 'blue' }, objects: [] });
  assert.deepEqual(scoreLoose(spec, empty, expect).objects[0]!.present, false);
  const yellow = await drawScene(spec, { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'yellow', size: 'large', position: 'top' }] });
  assert.equal(scoreLoose(spec, yellow, expect).allRight, false);
  const green = await drawScene(spec, { background: { kind: 'plain', color: 'green' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'top' }] });
  const s = scoreLoose(spec, green, expect);
  assert.deepEqual([s.background, s.objects[0]!.present, s.allRight], [false, true, false]);
});

test('two objects need two components: one object of each colour, not one twice', async () => {
  const expect: Expectation = { background: { kind: 'plain', color: 'black' }, objects: [{ color: 'red', shape: 'square', size: null, position: null }, { color: 'red', shape: 'circle', size: null, position: null }] };
  const one = await drawScene(spec, { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'red', size: 'large', position: 'left' }] });
  assert.deepEqual(scoreLoose(spec, one, expect).objects.map((o) => o.present), [true, false]);
  const two = await drawScene(spec, { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'red', size: 'small', position: 'left' }, { shape: 'circle', color: 'red', size: 'small', position: 'right' }] });
  assert.equal(scoreLoose(spec, two, expect).allRight, true);
});

test('a gradient named without its direction is right either way, and the drawn background is inferred', async () => {
  const expect: Expectation = { background: { kind: 'gradient', from: 'red', to: 'yellow', direction: null }, objects: [{ color: 'blue', shape: 'triangle', size: null, position: null }] };
  for (const direction of ['vertical', 'horizontal'] as const) {
    const img = await drawScene(spec, { background: { kind: 'gradient', from: 'red', to: 'yellow', direction }, objects: [{ shape: 'triangle', color: 'blue', size: 'large', position: 'centre' }] });
    assert.deepEqual(inferBackground(spec, img), { kind: 'gradient', from: 'red', to: 'yellow', direction });
    assert.equal(scoreLoose(spec, img, expect).allRight, true);
  }
  const reversed = await drawScene(spec, { background: { kind: 'gradient', from: 'yellow', to: 'red', direction: 'vertical' }, objects: [{ shape: 'triangle', color: 'blue', size: 'large', position: 'centre' }] });
  assert.equal(scoreLoose(spec, reversed, expect).background, false);
  const plain = await drawScene(spec, { background: { kind: 'plain', color: 'white' }, objects: [] });
  assert.deepEqual(inferBackground(spec, plain), { kind: 'plain', color: 'white' });
});

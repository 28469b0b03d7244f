import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accuracy, classifyShape, foregroundMask, loadHeldOut, loadSceneSpec, maskIoU, scoreImage, type SceneAttributes } from '../../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { drawScene } from '../../helpers/scenes.ts';

const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

test('scores every held-out caption drawn by an independent renderer as fully correct', async () => {
  const items = (await loadHeldOut(EMBEDDED_PACK_DIR)).slice(0, 80);
  assert.ok(items.length >= 80);
  const scores = await Promise.all(items.map(async (it) => scoreImage(spec, await drawScene(spec, it.attributes), it.attributes)));
  assert.deepEqual(accuracy(scores), { images: 80, background: 1, objectColor: 1, shape: 1, position: 1 });
});

test('wrong colour, shape, position and background are each caught', async () => {
  const truth: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'left' }] };
  const drawn = await drawScene(spec, { background: { kind: 'plain', color: 'green' }, objects: [{ shape: 'triangle', color: 'yellow', size: 'large', position: 'right' }] });
  const s = scoreImage(spec, drawn, truth);
  assert.equal(s.background, false);
  assert.deepEqual(s.objects[0]!.found && { color: s.objects[0]!.found.color, shape: s.objects[0]!.found.shape, position: s.objects[0]!.found.position }, { color: 'yellow', shape: 'triangle', position: 'right' });
  assert.deepEqual([s.objects[0]!.color, s.objects[0]!.shape, s.objects[0]!.position], [false, false, false]);
});

test('an empty image finds no object', async () => {
  const truth: SceneAttributes = { background: { kind: 'plain', color: 'white' }, objects: [{ shape: 'square', color: 'black', size: 'small', position: 'top' }] };
  const s = scoreImage(spec, await drawScene(spec, { background: truth.background, objects: [] }), truth);
  assert.equal(s.background, true);
  assert.equal(s.objects[0]!.found, undefined);
});

test('shape moments: a filled box is a square, a disc a circle, an up triangle a triangle', () => {
  const w = 40;
  const pixels = (inside: (x: number, y: number) => boolean) => {
    const out: number[] = [];
    for (let y = 0; y < w; y++) for (let x = 0; x < w; x++) if (inside(x, y)) out.push(y * w + x);
    return out;
  };
  assert.equal(classifyShape(pixels((x, y) => x >= 5 && x < 35 && y >= 5 && y < 35), w), 'square');
  assert.equal(classifyShape(pixels((x, y) => (x - 20) ** 2 + (y - 20) ** 2 < 15 ** 2), w), 'circle');
  assert.equal(classifyShape(pixels((x, y) => y >= 5 && y < 35 && Math.abs(x - 20) <= (y - 5) / 2), w), 'triangle');
});

test('mask IoU of a shape with itself is 1 and with a shifted copy less', async () => {
  const a: SceneAttributes = { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'white', size: 'large', position: 'centre' }] };
  const b: SceneAttributes = { ...a, objects: [{ ...a.objects[0]!, position: 'left' }] };
  const ma = foregroundMask(await drawScene(spec, a), a.background);
  const mb = foregroundMask(await drawScene(spec, b), b.background);
  assert.equal(maskIoU(ma, ma), 1);
  assert.ok(maskIoU(ma, mb) < 0.5);
});

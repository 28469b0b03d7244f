/**
 * The embedded pack generates what its prompts say (checked with the pack's evaluator): txt2img follows
 * captions it never saw, and img2img re-colours a drawn shape while keeping its outline.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { img2img, txt2img } from '../../pipelines/generate.ts';
import { decodeImage, tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { accuracy, foregroundMask, loadHeldOut, loadSceneSpec, maskIoU, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { drawScenePng } from '../helpers/scenes.ts';

const engine = await Engine.load(EMBEDDED_PACK_DIR);
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

test('txt2img at 4 steps follows held-out captions', async () => {
  const items = (await loadHeldOut(EMBEDDED_PACK_DIR)).filter((_, i) => i % 8 === 0); // 32 captions
  const scores = [];
  for (const item of items) {
    const [img] = await txt2img(engine, parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps: 4, guidance: 'full', guidance_scale: 2 }), 1);
    scores.push(scoreImage(spec, { data: tensorToRgb8(img!.data, img!.width, img!.height), width: img!.width, height: img!.height }, item.attributes));
  }
  const acc = accuracy(scores);
  assert.ok(acc.background >= 0.85, JSON.stringify(acc));
  assert.ok(acc.objectColor >= 0.75, JSON.stringify(acc));
  assert.ok(acc.shape >= 0.6, JSON.stringify(acc));
  assert.ok(acc.position >= 0.7, JSON.stringify(acc));
});

test('img2img re-colours a drawn shape and keeps its outline', async () => {
  const source: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'square', color: 'red', size: 'large', position: 'centre' }] };
  const target: SceneAttributes = { ...source, objects: [{ ...source.objects[0]!, color: 'yellow' }] };
  const input = await decodeImage(await drawScenePng(spec, source), 128, 128);
  const params = parseParams({ prompt: 'a large yellow square in the centre on a blue background', strength: 0.6, steps: 2, guidance: 'full', guidance_scale: 2, seed: 3 });
  const [out] = await img2img(engine, params, [input.data]);
  const rgb = { data: tensorToRgb8(out!.data, 128, 128), width: 128, height: 128 };
  const score = scoreImage(spec, rgb, target);
  assert.equal(score.objects[0]!.found?.color, 'yellow', JSON.stringify(score));
  const iou = maskIoU(foregroundMask(rgb, target.background), foregroundMask({ data: tensorToRgb8(input.data, 128, 128), width: 128, height: 128 }, source.background));
  assert.ok(iou >= 0.7, `mask IoU ${iou}`);
});

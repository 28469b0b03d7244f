import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { classifyByTemplate, scoreConcept } from '../../../pipelines/evaluation/concept-score.ts';
import { loadSceneSpec, type SceneAttributes } from '../../../pipelines/evaluation/evaluator.ts';
import { FIXTURES } from '../../helpers/fixtures.ts';

/** Ground-truth renders of all six shapes (models/train/adapters/make_score_fixtures.py); SCENES_DIR may point at more. */
const DIR = process.env['SCENES_DIR'] ?? join(FIXTURES, 'adapters', 'scenes');

test('the template classifier recognises every rendered shape, old and new, with colour and position', async () => {
  const spec = await loadSceneSpec(DIR);
  const items = JSON.parse(readFileSync(join(DIR, 'items.json'), 'utf8')) as { file: string; attributes: SceneAttributes }[];
  const wrong: string[] = [];
  for (const item of items) {
    const { data, info } = await sharp(join(DIR, item.file)).raw().toBuffer({ resolveWithObject: true });
    const s = scoreConcept(spec, { data: new Uint8Array(data), width: info.width, height: info.height }, item.attributes);
    if (!(s.shape && s.color && s.position)) wrong.push(`${item.file}: found ${JSON.stringify(s.found)}`);
  }
  assert.ok(wrong.length <= Math.floor(items.length / 50), `misclassified ${wrong.length} of ${items.length}:\n${wrong.join('\n')}`);
});

test('a filled disc is a circle, a disc with a hole a ring', () => {
  const width = 40;
  const disc: number[] = [];
  const ring: number[] = [];
  for (let y = 0; y < width; y++) {
    for (let x = 0; x < width; x++) {
      const r = Math.hypot(x + 0.5 - 20, y + 0.5 - 20);
      if (r <= 15) disc.push(y * width + x);
      if (r <= 15 && r >= 7.5) ring.push(y * width + x);
    }
  }
  assert.equal(classifyByTemplate(disc, width).shape, 'circle');
  assert.equal(classifyByTemplate(ring, width).shape, 'ring');
});

/**
 * Scores torch_eval.py's sets with the pack's evaluator and the concept classifier (development only).
 *   npx tsx pipelines/evaluation/score-torch-eval.ts OUT_DIR SET...
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { scoreConcept } from './concept-score.ts';
import { accuracy, loadSceneSpec, scoreImage, type Score } from './evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';

const SIZE = 128;
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
const [dir, ...sets] = process.argv.slice(2);
if (!dir || sets.length === 0) throw new Error('usage: score-torch-eval.ts OUT_DIR SET...');
for (const set of sets) {
  const items = JSON.parse(readFileSync(join(dir, `${set}.json`), 'utf8')) as { concept: string | null; attributes: Parameters<typeof scoreImage>[2] }[];
  const raw = gunzipSync(readFileSync(join(dir, `${set}.rgb.gz`)));
  const concept = new Map<string, boolean[]>();
  const base: Score[] = [];
  items.forEach((item, i) => {
    const img = { data: raw.subarray(i * SIZE * SIZE * 3, (i + 1) * SIZE * SIZE * 3), width: SIZE, height: SIZE };
    if (item.concept) concept.set(item.concept, [...(concept.get(item.concept) ?? []), scoreConcept(spec, img, item.attributes).shape]);
    else base.push(scoreImage(spec, img, item.attributes));
  });
  const shapes = [...concept].map(([c, v]) => `${c} ${(v.filter(Boolean).length / v.length).toFixed(3)}`).join(' ');
  console.log(set, shapes, base.length > 0 ? `base ${JSON.stringify(accuracy(base))}` : '');
}

/**
 * What keeping the camera's shape costs in quality: the pack's held-out captions rendered (txt2img, 4 steps,
 * CFG full 2.0, as the pack section) at the square training size and at the sizes the aspect rule picks for
 * 16:9, 9:16 and 4:3 (pipelines/aspect.ts), judged by the evaluator.
 */
import type { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage } from '../../pipelines/evaluation/evaluator.ts';
import { fmt } from './stats.ts';

export interface AspectBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const ASPECTS: [string, number][] = [
  ['1:1', 1],
  ['16:9', 16 / 9],
  ['9:16', 9 / 16],
  ['4:3', 4 / 3],
];

export async function benchAspect({ engine, quick, log }: AspectBenchOptions): Promise<Record<string, unknown>> {
  const dir = engine.pack.dir;
  const spec = await loadSceneSpec(dir).catch(() => undefined);
  if (!spec) {
    log('This pack has no scenes.json: quality figures are for tiny-shapes packs only.');
    return {};
  }
  const items = (await loadHeldOut(dir)).slice(0, quick ? 48 : 128);
  log(`### txt2img by the input's aspect on ${items.length} held-out captions (evaluator accuracy; 4 steps, CFG full 2.0)\n`);
  log('| aspect | size | background | object colour | shape | position |');
  log('| --- | --- | --- | --- | --- | --- |');
  const rows: Record<string, unknown>[] = [];
  for (const [name, aspect] of ASPECTS) {
    const { width, height } = engine.size({}, aspect);
    const scores = [];
    for (const item of items) {
      const [img] = await txt2img(engine, parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps: 4, guidance: 'full', guidance_scale: 2, width, height }), 1);
      scores.push(scoreImage(spec, { data: tensorToRgb8(img!.data, width, height), width, height }, item.attributes));
    }
    const acc = accuracy(scores);
    rows.push({ aspect: name, width, height, ...acc });
    log(`| ${name} | ${width} x ${height} | ${fmt(100 * acc.background, 1)}% | ${fmt(100 * acc.objectColor, 1)}% | ${fmt(100 * acc.shape, 1)}% | ${fmt(100 * acc.position, 1)}% |`);
  }
  log('\nThe sizes are those a stream takes for inputs of that shape when no size is set. A pack trained on squares only (tiny-shapes) keeps the background at any shape but loses objects away from 1:1: set `width` and `height` to its square size (with `fit`) for its best pictures.');
  return { captions: items.length, rows };
}

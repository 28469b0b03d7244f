/**
 * Measures a tiny-shapes pack on its held-out captions: renders each caption with its seed and scores it.
 *   npm run evaluate -- --steps 4 [--limit 256] [--cfg full --guidance 2] [--model DIR] [--grid out.png]
 */
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import cliProgress from 'cli-progress';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage, type Score } from '../evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { Engine } from '../engine.ts';
import { txt2img } from '../generate.ts';
import { tensorToRgb8 } from '../codecs/image.ts';
import { parseParams } from '../params.ts';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '4' },
    limit: { type: 'string' },
    cfg: { type: 'string', default: 'full' },
    guidance: { type: 'string', default: '2' },
    model: { type: 'string', default: EMBEDDED_PACK_DIR },
    grid: { type: 'string' },
  },
});

const engine = await Engine.load(values.model);
const spec = await loadSceneSpec(values.model);
const items = (await loadHeldOut(values.model)).slice(0, values.limit ? Number(values.limit) : undefined);
const bar = new cliProgress.SingleBar({ format: 'evaluating [{bar}] {value}/{total}' }, cliProgress.Presets.shades_classic);
bar.start(items.length, 0);
const scores: Score[] = [];
const tiles: Buffer[] = [];
const started = performance.now();
for (const item of items) {
  const params = parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps: Number(values.steps), guidance: values.cfg, guidance_scale: Number(values.guidance) });
  const [img] = await txt2img(engine, params, 1);
  const rgb = tensorToRgb8(img!.data, img!.width, img!.height);
  scores.push(scoreImage(spec, { data: rgb, width: img!.width, height: img!.height }, item.attributes));
  if (values.grid && tiles.length < 64) tiles.push(await sharp(rgb, { raw: { width: img!.width, height: img!.height, channels: 3 } }).png().toBuffer());
  bar.increment();
}
bar.stop();
const result = { steps: Number(values.steps), cfg: values.cfg, guidance: Number(values.guidance), seconds: (performance.now() - started) / 1000, ...accuracy(scores) };
console.log(JSON.stringify(result, null, 2));
if (values.grid && tiles.length > 0) {
  const size = engine.pack.defaultImageSize;
  const cols = 8;
  const rows = Math.ceil(tiles.length / cols);
  await sharp({ create: { width: cols * size, height: rows * size, channels: 3, background: '#808080' } })
    .composite(tiles.map((input, i) => ({ input, left: (i % cols) * size, top: Math.floor(i / cols) * size })))
    .png()
    .toFile(values.grid);
  console.log(`wrote ${values.grid}`);
}

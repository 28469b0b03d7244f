/**
 * Measures a tiny-shapes pack on its held-out prompts: renders each with its seed and scores it.
 *   npm run evaluate -- --steps 4 [--set exact,loose,diversity] [--limit 256] [--cfg full --guidance 2] [--model DIR] [--grid out.png]
 * exact: the training grammar's held-out captions (background / object colour / shape / position);
 * loose: phrasings from another template set, one and two objects (background right and every object present in its colour);
 * diversity: prompts naming no position, 6 seeds each (distinct positions, mean pixel difference between seeds).
 */
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import cliProgress from 'cli-progress';
import { loadSceneSpec, type RgbImage } from '../evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { Engine } from '../engine.ts';
import { evaluateExact, evaluateLoose, seedDiversity, type RenderSettings } from '../evaluation/held-out.ts';
import { loadLooseSet } from '../evaluation/loose-score.ts';

const SETS = ['exact', 'loose', 'diversity'] as const;

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '4' },
    set: { type: 'string', default: SETS.join(',') },
    limit: { type: 'string' },
    cfg: { type: 'string', default: 'full' },
    guidance: { type: 'string', default: '2' },
    model: { type: 'string', default: EMBEDDED_PACK_DIR },
    grid: { type: 'string' },
    misses: { type: 'boolean', default: false },
  },
});

const sets = values.set.split(',').map((s) => s.trim());
for (const s of sets) if (!(SETS as readonly string[]).includes(s)) throw new Error(`--set: unknown set "${s}" (known: ${SETS.join(', ')})`);
if (!['none', 'full', 'self', 'initialize'].includes(values.cfg)) throw new Error(`--cfg: expected none, full, self or initialize, got "${values.cfg}"`);
const settings: RenderSettings = { steps: Number(values.steps), guidance: values.cfg as RenderSettings['guidance'], guidanceScale: Number(values.guidance) };
const engine = await Engine.load(values.model);
const spec = await loadSceneSpec(values.model);
const tiles: RgbImage[] = [];
let bar: cliProgress.SingleBar | undefined;
const onImage = (img: RgbImage) => {
  bar?.increment();
  if (values.grid && tiles.length < 64) tiles.push(img);
};
const progress = (label: string, total: number) => {
  bar = new cliProgress.SingleBar({ format: `${label} [{bar}] {value}/{total}` }, cliProgress.Presets.shades_classic);
  bar.start(total, 0);
};

const result: Record<string, unknown> = { steps: settings.steps, cfg: settings.guidance, guidance: settings.guidanceScale };
const started = performance.now();
if (sets.includes('exact')) {
  progress('exact grammar', values.limit ? Number(values.limit) : 256);
  result['exact'] = await evaluateExact(engine, spec, settings, values.limit ? Number(values.limit) : undefined, onImage);
  bar?.stop();
}
if (sets.includes('loose')) {
  progress('loose phrasings', (await loadLooseSet(values.model))?.items.length ?? 0);
  const loose = await evaluateLoose(engine, spec, settings, 1, onImage);
  bar?.stop();
  if (loose) result['loose'] = values.misses ? loose : { loose: loose.loose, loose2: loose.loose2, bySet: loose.bySet };
}
if (sets.includes('diversity')) {
  progress('seed diversity', 60);
  const d = await seedDiversity(engine, spec, settings, undefined, onImage);
  bar?.stop();
  if (d) result['diversity'] = d;
}
result['seconds'] = (performance.now() - started) / 1000;
console.log(JSON.stringify(result, null, 2));
if (values.grid && tiles.length > 0) {
  const size = engine.pack.defaultImageSize;
  const cols = 8;
  const rows = Math.ceil(tiles.length / cols);
  const inputs = await Promise.all(tiles.map((t) => sharp(t.data, { raw: { width: t.width, height: t.height, channels: 3 } }).png().toBuffer()));
  await sharp({ create: { width: cols * size, height: rows * size, channels: 3, background: '#808080' } })
    .composite(inputs.map((input, i) => ({ input, left: (i % cols) * size, top: Math.floor(i / cols) * size })))
    .png()
    .toFile(values.grid);
  console.log(`wrote ${values.grid}`);
}

/**
 * Measures the concept adapters with the pack's evaluator through the real pipeline (txt2img on onnxruntime):
 *   - concept accuracy (the first object's shape, six-way template fit, pipelines/evaluation/concept-score.ts) on
 *     held-out concept prompts (heldout-concepts.json), for the base UNet, each adapter alone, and all
 *     orthogonal / all plain-LoRA adapters merged;
 *   - base accuracy (pipelines/evaluation/evaluator.ts, the pack's held-out captions, no concept) for the base UNet and
 *     the merged UNets;
 *   - merge and session build time per combination.
 *   npx tsx pipelines/evaluation/adapters.ts [--pack DIR] [--per-concept 256] [--base 256] [--steps 4]
 *       [--cfg full] [--guidance 2] [--weight 1] [--out models/train/adapters/results.json]
 *       [--adapters DIR (default: <pack>/adapters)] [--only REGEX (config labels, e.g. 'orthogonal')]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { scoreConcept, type ConceptScore } from './concept-score.ts';
import { AdapterStore } from '../../models/adapters/store.ts';
import type { AdapterChoice } from '../../models/adapters/choices.ts';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage, type HeldOutItem, type Score } from './evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { Engine } from '../engine.ts';
import { txt2img } from '../generate.ts';
import { tensorToRgb8 } from '../codecs/image.ts';
import { parseParams } from '../params.ts';

/** models/train/adapters/: the held-out concept prompts and the results live beside the adapters' training scripts. */
const ADAPTERS_TRAIN_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'train', 'adapters');
const CONCEPTS = ['diamond', 'heart', 'ring'] as const;

const { values } = parseArgs({
  options: {
    pack: { type: 'string', default: EMBEDDED_PACK_DIR },
    'per-concept': { type: 'string', default: '256' },
    base: { type: 'string', default: '256' },
    steps: { type: 'string', default: '4' },
    cfg: { type: 'string', default: 'full' },
    guidance: { type: 'string', default: '2' },
    weight: { type: 'string', default: '1' },
    out: { type: 'string', default: join(ADAPTERS_TRAIN_DIR, 'results.json') },
    adapters: { type: 'string' },
    only: { type: 'string' },
  },
});

interface ConceptItem extends HeldOutItem {
  readonly concept: string;
}

// 1. pack, store, prompts
const engine = await Engine.load(values.pack);
const spec = await loadSceneSpec(values.pack);
const store = new AdapterStore(values.adapters ?? join(values.pack, 'adapters'), { unet: join(values.pack, 'unet', 'model.onnx'), textEncoder: join(values.pack, 'text_encoder', 'model.onnx') }, engine.pack.sessions, 2);
const perConcept = Number(values['per-concept']);
const conceptItems = (JSON.parse(await readFile(join(ADAPTERS_TRAIN_DIR, 'heldout-concepts.json'), 'utf8')) as ConceptItem[]).filter(
  (it, _, all) => all.filter((o) => o.concept === it.concept).indexOf(it) < perConcept,
);
const baseItems = (await loadHeldOut(values.pack)).slice(0, Number(values.base));
const weight = Number(values.weight);
const all = (suffix: string): AdapterChoice[] => CONCEPTS.map((c) => ({ name: `${c}${suffix}`, weight }));
engine.attach({ adapters: store });
const available = new Set((await store.list()).map((a) => a.name));

// 2. what to measure: [label, adapters, concepts to score, score base prompts?]
const configs: { label: string; adapters: AdapterChoice[]; concepts: readonly string[]; base: boolean }[] = [
  { label: 'base UNet', adapters: [], concepts: CONCEPTS, base: true },
  ...CONCEPTS.map((c) => ({ label: `${c} alone (orthogonal)`, adapters: [{ name: c, weight }], concepts: [c], base: false })),
  { label: 'orthogonal merged (3)', adapters: all(''), concepts: CONCEPTS, base: true },
  ...CONCEPTS.map((c) => ({ label: `${c} alone (plain LoRA)`, adapters: [{ name: `${c}-lora`, weight }], concepts: [c], base: false })),
  { label: 'plain LoRA merged (3)', adapters: all('-lora'), concepts: CONCEPTS, base: true },
].filter((c) => c.adapters.every((a) => available.has(a.name)) && (values.only === undefined || new RegExp(values.only).test(c.label)));

/** One image through the service's own path: the engine resolves the merged UNet and encodes the prompt with it. */
async function render(adapters: readonly AdapterChoice[], caption: string, seed: number) {
  const params = parseParams({ prompt: caption, seed: seed % 2 ** 32, steps: Number(values.steps), guidance: values.cfg, guidance_scale: Number(values.guidance), adapters });
  const [img] = await txt2img(engine, params, 1);
  return { data: new Uint8Array(tensorToRgb8(img!.data, img!.width, img!.height)), width: img!.width, height: img!.height };
}

const fraction = (xs: readonly boolean[]) => (xs.length === 0 ? 0 : xs.filter(Boolean).length / xs.length);

// 3. run
const results = [];
for (const config of configs) {
  const started = performance.now();
  const merged = await store.merged(config.adapters);
  const concept: Record<string, { shape: number; color: number; position: number; n: number }> = {};
  for (const c of config.concepts) {
    const scores: ConceptScore[] = [];
    for (const item of conceptItems.filter((it) => it.concept === c)) {
      scores.push(scoreConcept(spec, await render(config.adapters, item.caption, item.seed), item.attributes));
    }
    concept[c] = { shape: fraction(scores.map((s) => s.shape)), color: fraction(scores.map((s) => s.color)), position: fraction(scores.map((s) => s.position)), n: scores.length };
  }
  let base: ReturnType<typeof accuracy> | undefined;
  if (config.base) {
    const scores: Score[] = [];
    for (const item of baseItems) scores.push(scoreImage(spec, await render(config.adapters, item.caption, item.seed), item.attributes));
    base = accuracy(scores);
  }
  const row = { label: config.label, adapters: config.adapters, warnings: merged.warnings, mergeMs: merged.mergeMs, buildMs: merged.buildMs, concept, base, seconds: (performance.now() - started) / 1000 };
  results.push(row);
  console.log(JSON.stringify(row));
}
await writeFile(values.out, JSON.stringify({ steps: Number(values.steps), cfg: values.cfg, guidance: Number(values.guidance), weight, perConcept, baseImages: baseItems.length, results }, null, 1));
console.log(`wrote ${values.out}`);

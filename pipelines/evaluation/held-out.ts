/**
 * Renders a tiny-shapes pack's held-out prompts and scores them (the evaluate CLI and the benchmark share it):
 * the exact-grammar captions (heldout.json, pipelines/evaluation/evaluator.ts), the loose phrasings (heldout_loose.json,
 * loose-score.ts) and seed diversity (prompts naming no position, several seeds each).
 */
import { accuracy, dominantColor, loadHeldOut, nearestPosition, objectComponents, scoreImage, type Accuracy, type RgbImage, type SceneSpec } from './evaluator.ts';
import type { Engine } from '../engine.ts';
import { txt2img } from '../generate.ts';
import { tensorToRgb8 } from '../codecs/image.ts';
import { parseParams } from '../params.ts';
import { inferBackground, loadLooseSet, looseAccuracy, scoreLoose, type LooseAccuracy, type LooseItem, type LooseScore, type UnplacedPrompt } from './loose-score.ts';

export interface RenderSettings {
  /** LCM steps (the evaluate CLI's default 4). */
  readonly steps: number;
  readonly guidance: 'none' | 'full' | 'self' | 'initialize';
  /** CFG scale (default 2). */
  readonly guidanceScale: number;
}

export const DEFAULT_RENDER: RenderSettings = Object.freeze({ steps: 4, guidance: 'full', guidanceScale: 2 });

/** Called with each rendered image (progress bars, preview grids). */
export type OnImage = (img: RgbImage, caption: string) => void | Promise<void>;

export async function render(engine: Engine, caption: string, seed: number, r: RenderSettings): Promise<RgbImage> {
  const [img] = await txt2img(engine, parseParams({ prompt: caption, seed: seed % 2 ** 32, steps: r.steps, guidance: r.guidance, guidance_scale: r.guidanceScale }), 1);
  return { data: tensorToRgb8(img!.data, img!.width, img!.height), width: img!.width, height: img!.height };
}

/** Exact-grammar held-out captions with their own seeds (the first `limit`). */
export async function evaluateExact(engine: Engine, spec: SceneSpec, r: RenderSettings, limit?: number, onImage?: OnImage): Promise<Accuracy> {
  const items = (await loadHeldOut(engine.pack.dir)).slice(0, limit);
  const scores = [];
  for (const item of items) {
    const img = await render(engine, item.caption, item.seed, r);
    scores.push(scoreImage(spec, img, item.attributes));
    await onImage?.(img, item.caption);
  }
  return accuracy(scores);
}

export interface LooseResult {
  /** One-object phrasings (every template set). */
  readonly loose: LooseAccuracy;
  /** Two-object phrasings (every template set). */
  readonly loose2: LooseAccuracy;
  /** The same per template set. */
  readonly bySet: Readonly<Record<string, { loose: LooseAccuracy; loose2: LooseAccuracy }>>;
  /** Prompts whose image missed, with what was found (for reading failures). */
  readonly misses: readonly { caption: string; background: boolean; found: readonly (string | undefined)[] }[];
}

/** Loose phrasings of the pack's heldout_loose.json (every `stride`-th item); undefined when the pack has none. */
export async function evaluateLoose(engine: Engine, spec: SceneSpec, r: RenderSettings, stride = 1, onImage?: OnImage): Promise<LooseResult | undefined> {
  const set = await loadLooseSet(engine.pack.dir);
  if (!set) return undefined;
  const items = set.items.filter((_, i) => i % stride === 0);
  const scored: { item: LooseItem; score: LooseScore }[] = [];
  const misses: { caption: string; background: boolean; found: (string | undefined)[] }[] = [];
  for (const item of items) {
    const img = await render(engine, item.caption, item.seed, r);
    const s = scoreLoose(spec, img, item.expect);
    scored.push({ item, score: s });
    if (!s.allRight) misses.push({ caption: item.caption, background: s.background, found: s.objects.map((o) => (o.found ? `${o.found.shape} at ${o.found.position}` : undefined)) });
    await onImage?.(img, item.caption);
  }
  const of = (keep: (item: LooseItem) => boolean) => ({
    loose: looseAccuracy(scored.filter((x) => x.item.kind === 'loose' && keep(x.item)).map((x) => x.score)),
    loose2: looseAccuracy(scored.filter((x) => x.item.kind === 'loose2' && keep(x.item)).map((x) => x.score)),
  });
  const sets = [...new Set(items.map((i) => i.set ?? 'a'))].sort();
  return { ...of(() => true), bySet: Object.fromEntries(sets.map((name) => [name, of((i) => (i.set ?? 'a') === name)])), misses };
}

export interface DiversityResult {
  readonly prompts: readonly { caption: string; positions: readonly string[]; distinct: number }[];
  /** Mean number of distinct positions (of 5) the object lands in over a prompt's seeds. */
  readonly meanDistinctPositions: number;
  readonly minDistinctPositions: number;
  /** Share of prompts landing in at least 3 positions (issue 17's acceptance: all of them). */
  readonly shareAtLeast3: number;
  /** Mean absolute RGB difference between two seeds' images of one prompt, 0-255. */
  readonly meanPixelDifference: number;
}

/** Where the prompt's object lands over its seeds: the largest component of its colour (or the largest at all). */
export async function seedDiversity(engine: Engine, spec: SceneSpec, r: RenderSettings, prompts?: readonly UnplacedPrompt[], onImage?: OnImage): Promise<DiversityResult | undefined> {
  const list = prompts ?? (await loadLooseSet(engine.pack.dir))?.unplaced;
  if (!list || list.length === 0) return undefined;
  const out: { caption: string; positions: string[]; distinct: number }[] = [];
  let diffSum = 0;
  let diffPairs = 0;
  for (const p of list) {
    const images: RgbImage[] = [];
    const positions: string[] = [];
    for (const seed of p.seeds) {
      const img = await render(engine, p.caption, seed, r);
      images.push(img);
      await onImage?.(img, p.caption);
      const bg = p.expect.background?.kind === 'plain' ? p.expect.background : inferBackground(spec, img);
      const comps = objectComponents(spec, img, bg);
      const wanted = p.expect.objects[0]?.color;
      const c = comps.find((x) => wanted !== undefined && dominantColor(spec, img, x.pixels) === wanted) ?? comps[0];
      positions.push(c ? nearestPosition(spec, c.cx, c.cy) : 'none');
    }
    for (let i = 0; i < images.length; i++) {
      for (let j = i + 1; j < images.length; j++) {
        diffSum += meanAbsDifference(images[i]!, images[j]!);
        diffPairs++;
      }
    }
    out.push({ caption: p.caption, positions, distinct: new Set(positions.filter((x) => x !== 'none')).size });
  }
  const distinct = out.map((o) => o.distinct);
  return {
    prompts: out,
    meanDistinctPositions: distinct.reduce((a, b) => a + b, 0) / distinct.length,
    minDistinctPositions: Math.min(...distinct),
    shareAtLeast3: distinct.filter((d) => d >= 3).length / distinct.length,
    meanPixelDifference: diffPairs === 0 ? 0 : diffSum / diffPairs,
  };
}

function meanAbsDifference(a: RgbImage, b: RgbImage): number {
  let sum = 0;
  for (let i = 0; i < a.data.length; i++) sum += Math.abs(a.data[i]! - b.data[i]!);
  return sum / a.data.length;
}

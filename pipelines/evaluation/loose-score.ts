/**
 * Scores images made from loose phrasings (issue 17): prompts that name only some attributes, in any words.
 * What the prompt names must be seen (its background; each object present in its colour; shape, and position
 * where named); what it leaves open is the seed's to choose. Pixel statistics only, like pipelines/evaluation/evaluator.ts.
 * The held-out loose set is the pack's heldout_loose.json (written by models/train/heldout_phrasings.py, a
 * template set that training does not use).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exists } from '../../models/files.ts';
import {
  borderColor,
  classifyShape,
  dominantColor,
  nearestPosition,
  objectComponents,
  type Background,
  type RgbImage,
  type SceneSpec,
} from './evaluator.ts';

/** A background as a prompt names it: a gradient's direction may be left open; null when no background is named. */
export type ExpectedBackground =
  | { readonly kind: 'plain'; readonly color: string }
  | { readonly kind: 'gradient'; readonly from: string; readonly to: string; readonly direction: 'vertical' | 'horizontal' | null }
  | null;

/** An object as a prompt names it: colour and shape always, size and position only when named. */
export interface ExpectedObject {
  readonly color: string;
  readonly shape: string;
  readonly size: string | null;
  readonly position: string | null;
}

export interface Expectation {
  readonly background: ExpectedBackground;
  readonly objects: readonly ExpectedObject[];
}

export interface LooseItem {
  readonly caption: string;
  readonly seed: number;
  /** loose: one object; loose2: two objects. */
  readonly kind: 'loose' | 'loose2';
  /** The template set it was written with (heldout_phrasings.py: "a" scored during development, "b" untouched). */
  readonly set?: string;
  readonly expect: Expectation;
}

/** A prompt naming no position, rendered with several seeds (seed diversity). */
export interface UnplacedPrompt {
  readonly caption: string;
  readonly seeds: readonly number[];
  readonly expect: Expectation;
}

export interface LooseSet {
  readonly items: readonly LooseItem[];
  readonly unplaced: readonly UnplacedPrompt[];
}

export interface LooseObjectScore {
  /** A component of the named colour exists (the object is there, in its colour). */
  readonly present: boolean;
  readonly shape: boolean;
  /** null when the prompt names no position. */
  readonly position: boolean | null;
  readonly found: { readonly shape: string; readonly position: string; readonly area: number } | undefined;
}

export interface LooseScore {
  readonly background: boolean;
  readonly objects: readonly LooseObjectScore[];
  /** Background right and every named object present in its colour: the acceptance per image. */
  readonly allRight: boolean;
}

/** The pack's held-out loose phrasings, or undefined when the pack has none. */
export async function loadLooseSet(packDir: string): Promise<LooseSet | undefined> {
  const path = join(packDir, 'heldout_loose.json');
  if (!(await exists(path))) return undefined;
  return JSON.parse(await readFile(path, 'utf8')) as LooseSet;
}

/** The background as drawn: a gradient along the axis whose opposite border bands differ, else plain. */
export function inferBackground(spec: SceneSpec, img: RgbImage): Background {
  const [top, bottom, left, right] = (['top', 'bottom', 'left', 'right'] as const).map((side) => borderColor(spec, img, side)) as [string, string, string, string];
  if (top !== bottom) return { kind: 'gradient', from: top, to: bottom, direction: 'vertical' };
  if (left !== right) return { kind: 'gradient', from: left, to: right, direction: 'horizontal' };
  return { kind: 'plain', color: borderColor(spec, img, 'all') };
}

function backgroundRight(spec: SceneSpec, img: RgbImage, expected: ExpectedBackground): boolean {
  if (expected === null) return true;
  if (expected.kind === 'plain') return borderColor(spec, img, 'all') === expected.color;
  const along = (a: 'top' | 'left', b: 'bottom' | 'right') => borderColor(spec, img, a) === expected.from && borderColor(spec, img, b) === expected.to;
  if (expected.direction === 'vertical') return along('top', 'bottom');
  if (expected.direction === 'horizontal') return along('left', 'right');
  return along('top', 'bottom') || along('left', 'right');
}

/** Scores one image against what its prompt names; each named object takes the largest unused component of its colour. */
export function scoreLoose(spec: SceneSpec, img: RgbImage, expect: Expectation): LooseScore {
  const background = backgroundRight(spec, img, expect.background);
  const drawn = expect.background?.kind === 'plain' || (expect.background?.kind === 'gradient' && expect.background.direction !== null)
    ? (expect.background as Background)
    : inferBackground(spec, img);
  const components = objectComponents(spec, img, drawn).map((c) => ({ c, color: dominantColor(spec, img, c.pixels) }));
  const used = new Set<number>();
  const objects = expect.objects.map((o): LooseObjectScore => {
    const k = components.findIndex((x, i) => !used.has(i) && x.color === o.color); // components are largest first
    if (k < 0) return { present: false, shape: false, position: o.position === null ? null : false, found: undefined };
    used.add(k);
    const c = components[k]!.c;
    const found = { shape: classifyShape(c.pixels, img.width), position: nearestPosition(spec, c.cx, c.cy), area: c.pixels.length };
    return { present: true, shape: found.shape === o.shape, position: o.position === null ? null : found.position === o.position, found };
  });
  return { background, objects, allRight: background && objects.every((o) => o.present) };
}

export interface LooseAccuracy {
  readonly images: number;
  /** Share of images with the background right and every named object present in its colour. */
  readonly allRight: number;
  readonly background: number;
  /** Per object: present in its colour. */
  readonly objectPresent: number;
  /** Per object: present and of the named shape. */
  readonly shape: number;
  /** Per object whose position the prompt names: found there. */
  readonly position: number | null;
}

export function looseAccuracy(scores: readonly LooseScore[]): LooseAccuracy {
  const objects = scores.flatMap((s) => s.objects);
  const placed = objects.filter((o) => o.position !== null);
  const frac = (n: number, d: number) => (d === 0 ? 0 : n / d);
  return {
    images: scores.length,
    allRight: frac(scores.filter((s) => s.allRight).length, scores.length),
    background: frac(scores.filter((s) => s.background).length, scores.length),
    objectPresent: frac(objects.filter((o) => o.present).length, objects.length),
    shape: frac(objects.filter((o) => o.present && o.shape).length, objects.length),
    position: placed.length === 0 ? null : frac(placed.filter((o) => o.position).length, placed.length),
  };
}

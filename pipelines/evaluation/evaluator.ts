/**
 * The tiny-shapes evaluator: scores an image against its caption's attributes from pixel statistics alone
 * (no learned model, deterministic). Background colour from the image border; objects as connected
 * components of pixels far from the background; colour by the nearest palette entry; shape from mask
 * moments; position from the centroid. The palette and geometry come from the pack's scenes.json.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type Rgb = readonly [number, number, number];

export interface SceneSpec {
  readonly palette: Readonly<Record<string, Rgb>>;
  readonly positions: Readonly<Record<string, { center: readonly [number, number] }>>;
}

export type Background =
  | { readonly kind: 'plain'; readonly color: string }
  | { readonly kind: 'gradient'; readonly from: string; readonly to: string; readonly direction: 'vertical' | 'horizontal' };

export interface SceneObject {
  readonly shape: string;
  readonly color: string;
  readonly size: string;
  readonly position: string;
}

export interface SceneAttributes {
  readonly background: Background;
  readonly objects: readonly SceneObject[];
}

export interface HeldOutItem {
  readonly caption: string;
  readonly seed: number;
  readonly attributes: SceneAttributes;
}

/** An RGB image, interleaved [H, W, 3] bytes. */
export interface RgbImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

export interface ObjectScore {
  readonly color: boolean;
  readonly shape: boolean;
  readonly position: boolean;
  readonly found: { color: string; shape: string; position: string; area: number } | undefined;
}

export interface Score {
  readonly background: boolean;
  readonly objects: readonly ObjectScore[];
  readonly foundBackground: string;
}

/** Border band sampled for the background, as a fraction of the side (objects never come this close). */
const BORDER = 0.03;
/** RGB distance from the background model above which a pixel is foreground. */
const FOREGROUND_DISTANCE = 60;
/** Components smaller than this fraction of the image are noise. */
const MIN_COMPONENT = 0.002;

export async function loadSceneSpec(packDir: string): Promise<SceneSpec> {
  return JSON.parse(await readFile(join(packDir, 'scenes.json'), 'utf8')) as SceneSpec;
}

export async function loadHeldOut(packDir: string): Promise<HeldOutItem[]> {
  return JSON.parse(await readFile(join(packDir, 'heldout.json'), 'utf8')) as HeldOutItem[];
}

export function nearestColor(spec: SceneSpec, rgb: Rgb): string {
  let best = '';
  let bestDistance = Infinity;
  for (const [name, c] of Object.entries(spec.palette)) {
    const d = (c[0] - rgb[0]) ** 2 + (c[1] - rgb[1]) ** 2 + (c[2] - rgb[2]) ** 2;
    if (d < bestDistance) {
      bestDistance = d;
      best = name;
    }
  }
  return best;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function medianColor(img: RgbImage, pixels: readonly number[]): Rgb {
  return [0, 1, 2].map((c) => median(pixels.map((p) => img.data[3 * p + c]!))) as unknown as Rgb;
}

export type BorderSide = 'top' | 'bottom' | 'left' | 'right' | 'all';

/** Pixel indices of one side's border band. */
function band(img: RgbImage, side: BorderSide): number[] {
  const { width: w, height: h } = img;
  const bw = Math.max(1, Math.round(BORDER * w));
  const bh = Math.max(1, Math.round(BORDER * h));
  const out: number[] = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const inside =
        side === 'top' ? y < bh : side === 'bottom' ? y >= h - bh : side === 'left' ? x < bw : side === 'right' ? x >= w - bw : y < bh || y >= h - bh || x < bw || x >= w - bw;
      if (inside) out.push(y * w + x);
    }
  }
  return out;
}

/** The measured background colour at every pixel (constant, or a linear gradient between measured ends). */
function backgroundModel(img: RgbImage, bg: Background): { colorAt: (x: number, y: number) => Rgb; found: string[]; spec?: never } {
  if (bg.kind === 'plain') {
    const c = medianColor(img, band(img, 'all'));
    return { colorAt: () => c, found: [] };
  }
  const [a, b] = bg.direction === 'vertical' ? (['top', 'bottom'] as const) : (['left', 'right'] as const);
  const ca = medianColor(img, band(img, a));
  const cb = medianColor(img, band(img, b));
  const colorAt = (x: number, y: number): Rgb => {
    const t = bg.direction === 'vertical' ? y / (img.height - 1) : x / (img.width - 1);
    return [0, 1, 2].map((i) => ca[i]! + t * (cb[i]! - ca[i]!)) as unknown as Rgb;
  };
  return { colorAt, found: [] };
}

/** The palette colour nearest to the median of one border band. */
export function borderColor(spec: SceneSpec, img: RgbImage, side: BorderSide): string {
  return nearestColor(spec, medianColor(img, band(img, side)));
}

/** Foreground mask: pixels far from the background model. */
export function foregroundMask(img: RgbImage, bg: Background): Uint8Array {
  const model = backgroundModel(img, bg);
  const mask = new Uint8Array(img.width * img.height);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const p = y * img.width + x;
      const c = model.colorAt(x, y);
      const d = Math.hypot(img.data[3 * p]! - c[0], img.data[3 * p + 1]! - c[1], img.data[3 * p + 2]! - c[2]);
      if (d > FOREGROUND_DISTANCE) mask[p] = 1;
    }
  }
  return mask;
}

export interface Component {
  readonly pixels: number[];
  readonly cx: number;
  readonly cy: number;
}

/** 4-connected components of a mask, largest first; with `labels`, only equally labelled pixels connect. */
function components(mask: Uint8Array, width: number, height: number, labels?: Uint8Array): Component[] {
  const label = new Int32Array(mask.length).fill(-1);
  const out: Component[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || label[start]! >= 0) continue;
    const pixels: number[] = [];
    const stack = [start];
    label[start] = out.length;
    while (stack.length > 0) {
      const p = stack.pop()!;
      pixels.push(p);
      const x = p % width;
      const y = (p - x) / width;
      for (const [nx, ny] of [[x - 1, y], [x + 1, y], [x, y - 1], [x, y + 1]] as const) {
        if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
        const q = ny * width + nx;
        if (mask[q] && label[q]! < 0 && (!labels || labels[q] === labels[p])) {
          label[q] = out.length;
          stack.push(q);
        }
      }
    }
    let sx = 0;
    let sy = 0;
    for (const p of pixels) {
      sx += p % width;
      sy += Math.floor(p / width);
    }
    out.push({ pixels, cx: sx / pixels.length / width, cy: sy / pixels.length / height });
  }
  return out.sort((a, b) => b.pixels.length - a.pixels.length);
}

/** The inclusive bounding box of pixel indices on an image `width` pixels wide. */
export function boundingBox(pixels: readonly number[], width: number): { minX: number; maxX: number; minY: number; maxY: number } {
  let minX = Infinity;
  let maxX = -Infinity;
  let minY = Infinity;
  let maxY = -Infinity;
  for (const p of pixels) {
    const x = p % width;
    const y = (p - x) / width;
    minX = Math.min(minX, x);
    maxX = Math.max(maxX, x);
    minY = Math.min(minY, y);
    maxY = Math.max(maxY, y);
  }
  return { minX, maxX, minY, maxY };
}

/**
 * Shape from the mask's profile inside its bounding box, robust to the soft edges of generated images:
 * a triangle pointing up is narrow in its upper part and wide in its lower part; a square fills its box's
 * corners, a circle leaves them empty.
 */
export function classifyShape(pixels: readonly number[], width: number): string {
  const { minX, maxX, minY, maxY } = boundingBox(pixels, width);
  const boxW = maxX - minX + 1;
  const boxH = maxY - minY + 1;
  const rowWidth = new Float64Array(boxH);
  let corner = 0;
  const c = 0.2; // corner squares of 20% of the box side
  for (const p of pixels) {
    const x = p % width;
    const y = Math.floor(p / width);
    rowWidth[y - minY]! += 1;
    const fx = (x - minX + 0.5) / boxW;
    const fy = (y - minY + 0.5) / boxH;
    if ((fx < c || fx > 1 - c) && (fy < c || fy > 1 - c)) corner++;
  }
  const meanWidth = (from: number, to: number) => {
    const a = Math.floor(from * boxH);
    const b = Math.max(a + 1, Math.floor(to * boxH));
    let sum = 0;
    for (let r = a; r < b; r++) sum += rowWidth[r]!;
    return sum / (b - a);
  };
  // 1. a triangle: its upper part is much narrower than its lower part
  if (meanWidth(0.1, 0.35) < 0.6 * meanWidth(0.65, 0.9)) return 'triangle';
  // 2. a square fills its box's corners; a circle leaves about 80% of them empty
  const cornerArea = 4 * c * c * boxW * boxH;
  return corner / cornerArea > 0.5 ? 'square' : 'circle';
}

/** The scene's objects as found: foreground components of at least MIN_COMPONENT of the image whose pixels link
 * only within one palette colour (so touching objects of different colours stay apart), largest first. */
export function objectComponents(spec: SceneSpec, img: RgbImage, background: Background): Component[] {
  const names = Object.keys(spec.palette);
  const labels = new Uint8Array(img.width * img.height);
  for (let p = 0; p < labels.length; p++) labels[p] = names.indexOf(nearestColor(spec, [img.data[3 * p]!, img.data[3 * p + 1]!, img.data[3 * p + 2]!]));
  const minArea = MIN_COMPONENT * img.width * img.height;
  return components(foregroundMask(img, background), img.width, img.height, labels).filter((c) => c.pixels.length >= minArea);
}

/** The palette colour most of these pixels are nearest to. */
export function dominantColor(spec: SceneSpec, img: RgbImage, pixels: readonly number[]): string {
  const counts = new Map<string, number>();
  for (const p of pixels) {
    const name = nearestColor(spec, [img.data[3 * p]!, img.data[3 * p + 1]!, img.data[3 * p + 2]!]);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts.entries()].sort((x, y) => y[1] - x[1])[0]![0];
}

export function nearestPosition(spec: SceneSpec, cx: number, cy: number): string {
  let best = '';
  let bestDistance = Infinity;
  for (const [name, p] of Object.entries(spec.positions)) {
    const d = (p.center[0] - cx) ** 2 + (p.center[1] - cy) ** 2;
    if (d < bestDistance) {
      bestDistance = d;
      best = name;
    }
  }
  return best;
}

export function scoreImage(spec: SceneSpec, img: RgbImage, attributes: SceneAttributes): Score {
  // 1. background: border colours against the caption's
  const bg = attributes.background;
  let backgroundOk: boolean;
  let foundBackground: string;
  if (bg.kind === 'plain') {
    foundBackground = borderColor(spec, img, 'all');
    backgroundOk = foundBackground === bg.color;
  } else {
    const [a, b] = bg.direction === 'vertical' ? (['top', 'bottom'] as const) : (['left', 'right'] as const);
    const from = borderColor(spec, img, a);
    const to = borderColor(spec, img, b);
    foundBackground = `${from}->${to}`;
    backgroundOk = from === bg.from && to === bg.to;
  }
  // 2. objects: the largest components, matched to the caption's objects by position
  const found = objectComponents(spec, img, bg).slice(0, attributes.objects.length);
  const expected = attributes.objects.map((o) => spec.positions[o.position]!.center);
  const assignment = bestAssignment(expected, found);
  const objects = attributes.objects.map((o, i): ObjectScore => {
    const c = assignment[i];
    if (!c) return { color: false, shape: false, position: false, found: undefined };
    const color = dominantColor(spec, img, c.pixels);
    const shape = classifyShape(c.pixels, img.width);
    const position = nearestPosition(spec, c.cx, c.cy);
    return { color: color === o.color, shape: shape === o.shape, position: position === o.position, found: { color, shape, position, area: c.pixels.length } };
  });
  return { background: backgroundOk, objects, foundBackground };
}

/** Pairs expected centres with found components (at most two objects: try both orders). */
function bestAssignment(expected: readonly (readonly [number, number])[], found: readonly Component[]): (Component | undefined)[] {
  const cost = (e: readonly [number, number], c: Component | undefined) => (c ? (e[0] - c.cx) ** 2 + (e[1] - c.cy) ** 2 : 1);
  if (expected.length === 1) return [found[0]];
  const straight = [found[0], found[1]];
  const swapped = [found[1], found[0]];
  const total = (order: (Component | undefined)[]) => expected.reduce((s, e, i) => s + cost(e, order[i]), 0);
  return total(straight) <= total(swapped) ? straight : swapped;
}

export interface Accuracy {
  readonly images: number;
  readonly background: number;
  readonly objectColor: number;
  readonly shape: number;
  readonly position: number;
}

/** Fractions correct over many scores (object attributes counted per object). */
export function accuracy(scores: readonly Score[]): Accuracy {
  const objects = scores.flatMap((s) => s.objects);
  const frac = (n: number, d: number) => (d === 0 ? 0 : n / d);
  return {
    images: scores.length,
    background: frac(scores.filter((s) => s.background).length, scores.length),
    objectColor: frac(objects.filter((o) => o.color).length, objects.length),
    shape: frac(objects.filter((o) => o.shape).length, objects.length),
    position: frac(objects.filter((o) => o.position).length, objects.length),
  };
}

/** Intersection over union of two masks. */
export function maskIoU(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] && b[i]) inter++;
    if (a[i] || b[i]) union++;
  }
  return union === 0 ? 0 : inter / union;
}

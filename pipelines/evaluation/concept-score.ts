/**
 * Scoring for the concept adapters' new shapes (diamond, heart, ring), on top of the pack's evaluator
 * (pipelines/evaluation/evaluator.ts: background model, foreground mask, palette colours, positions). The pack's moment
 * classifier only knows circle / square / triangle; here a component's shape is the template with the best
 * intersection over union after fitting the template's bounding box to the component's, over all six shapes.
 * Templates follow models/train/adapters/shapes.py and models/train/scenes.py (unit half-extent r = 1,
 * y downwards).
 */
import { boundingBox, dominantColor, nearestPosition, objectComponents, type RgbImage, type SceneAttributes, type SceneSpec } from './evaluator.ts';

export const BASE_SHAPES = ['circle', 'square', 'triangle'] as const;
export const CONCEPT_SHAPES = ['diamond', 'heart', 'ring'] as const;
export const ALL_SHAPES = [...BASE_SHAPES, ...CONCEPT_SHAPES] as const;
export type ShapeName = (typeof ALL_SHAPES)[number];

/** Inner radius of the ring's hole, as a fraction of r (shapes.py). */
const RING_INNER = 0.5;

type Point = readonly [number, number];

function heartPolygon(n = 96): Point[] {
  const pts = Array.from({ length: n }, (_, i) => {
    const t = (2 * Math.PI * i) / n;
    const x = 16 * Math.sin(t) ** 3;
    const y = -(13 * Math.cos(t) - 5 * Math.cos(2 * t) - 2 * Math.cos(3 * t) - Math.cos(4 * t));
    return [x, y] as const;
  });
  const ys = pts.map((p) => p[1]);
  const mid = (Math.max(...ys) + Math.min(...ys)) / 2;
  return pts.map(([x, y]) => [x / 16, (y - mid) / 16] as const);
}

function insidePolygon(pts: readonly Point[], x: number, y: number): boolean {
  let inside = false;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    const [xi, yi] = pts[i]!;
    const [xj, yj] = pts[j]!;
    if (yi > y !== yj > y && x < xi + ((y - yi) * (xj - xi)) / (yj - yi)) inside = !inside;
  }
  return inside;
}

interface Template {
  readonly inside: (x: number, y: number) => boolean;
  /** Bounding box in template units: [x0, x1, y0, y1]. */
  readonly box: readonly [number, number, number, number];
}

function polygonTemplate(pts: readonly Point[]): Template {
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  return { inside: (x, y) => insidePolygon(pts, x, y), box: [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)] };
}

const UNIT_BOX = [-1, 1, -1, 1] as const;
const TEMPLATES: Record<ShapeName, Template> = {
  circle: { inside: (x, y) => x * x + y * y <= 1, box: UNIT_BOX },
  square: { inside: (x, y) => Math.abs(x) <= 1 && Math.abs(y) <= 1, box: UNIT_BOX },
  triangle: polygonTemplate([[0, -1], [1, 1], [-1, 1]]),
  diamond: { inside: (x, y) => Math.abs(x) + Math.abs(y) <= 1, box: UNIT_BOX },
  heart: polygonTemplate(heartPolygon()),
  ring: { inside: (x, y) => x * x + y * y <= 1 && x * x + y * y >= RING_INNER * RING_INNER, box: UNIT_BOX },
};

/** The best-fitting template for a component (pixel indices of a width-wide image) and its IoU. */
export function classifyByTemplate(pixels: readonly number[], width: number, shapes: readonly ShapeName[] = ALL_SHAPES): { shape: ShapeName; iou: number } {
  const { minX, maxX, minY, maxY } = boundingBox(pixels, width);
  const w = maxX - minX + 1;
  const h = maxY - minY + 1;
  const pad = 2;
  const gw = w + 2 * pad;
  const own = new Uint8Array(gw * (h + 2 * pad)); // the component on a padded local grid
  for (const p of pixels) {
    const x = p % width;
    own[((p - x) / width - minY + pad) * gw + (x - minX + pad)] = 1;
  }
  let best: { shape: ShapeName; iou: number } = { shape: shapes[0]!, iou: -1 };
  for (const shape of shapes) {
    const t = TEMPLATES[shape];
    const [x0, x1, y0, y1] = t.box;
    const scale = (w / (x1 - x0) + h / (y1 - y0)) / 2; // pixels per template unit
    const cx = minX + w / 2 - (scale * (x0 + x1)) / 2; // template origin in pixels
    const cy = minY + h / 2 - (scale * (y0 + y1)) / 2;
    let inter = 0;
    let union = 0;
    for (let gy = 0; gy < h + 2 * pad; gy++) {
      for (let gx = 0; gx < gw; gx++) {
        const px = gx + minX - pad + 0.5;
        const py = gy + minY - pad + 0.5;
        const a = t.inside((px - cx) / scale, (py - cy) / scale);
        const b = own[gy * gw + gx] === 1;
        if (a && b) inter++;
        if (a || b) union++;
      }
    }
    const iou = union === 0 ? 0 : inter / union;
    if (iou > best.iou) best = { shape, iou };
  }
  return best;
}

export interface ConceptScore {
  /** The first object's shape (the concept) found by template fit. */
  readonly shape: boolean;
  readonly color: boolean;
  readonly position: boolean;
  readonly found: { shape: ShapeName; iou: number; color: string; position: string } | undefined;
}

/** Scores the caption's first object (the concept object of the adapters' prompts) over all six shapes. */
export function scoreConcept(spec: SceneSpec, img: RgbImage, attributes: SceneAttributes): ConceptScore {
  const target = attributes.objects[0]!;
  const centre = spec.positions[target.position]!.center;
  const candidates = objectComponents(spec, img, attributes.background).slice(0, attributes.objects.length);
  const hit = candidates.sort((a, b) => dist([a.cx, a.cy], centre) - dist([b.cx, b.cy], centre))[0];
  if (!hit) return { shape: false, color: false, position: false, found: undefined };
  const { shape, iou } = classifyByTemplate(hit.pixels, img.width);
  const color = dominantColor(spec, img, hit.pixels);
  const position = nearestPosition(spec, hit.cx, hit.cy);
  return { shape: shape === target.shape, color: color === target.color, position: position === target.position, found: { shape, iou, color, position } };
}

function dist(a: readonly [number, number], b: readonly [number, number]): number {
  return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2;
}

/**
 * Draws tiny-shapes scenes with SVG through sharp: an independent renderer of scenes.json's geometry, for
 * evaluator tests and img2img inputs.
 */
import sharp from 'sharp';
import type { SceneAttributes, SceneSpec, RgbImage } from '../../pipelines/evaluation/evaluator.ts';

const HALF_EXTENT: Record<string, number> = { small: 0.1, large: 0.18 };

export function sceneSvg(spec: SceneSpec, attrs: SceneAttributes, size = 128): string {
  const hex = (name: string) => `rgb(${spec.palette[name]!.join(',')})`;
  const bg = attrs.background;
  const defs =
    bg.kind === 'gradient'
      ? `<defs><linearGradient id="g" x1="0" y1="0" x2="${bg.direction === 'horizontal' ? 1 : 0}" y2="${bg.direction === 'vertical' ? 1 : 0}"><stop offset="0" stop-color="${hex(bg.from)}"/><stop offset="1" stop-color="${hex(bg.to)}"/></linearGradient></defs>`
      : '';
  const fill = bg.kind === 'plain' ? hex(bg.color) : 'url(#g)';
  const shapes = attrs.objects.map((o) => {
    const [cx, cy] = spec.positions[o.position]!.center.map((v) => v * size) as [number, number];
    const r = HALF_EXTENT[o.size]! * size;
    if (o.shape === 'circle') return `<circle cx="${cx}" cy="${cy}" r="${r}" fill="${hex(o.color)}"/>`;
    if (o.shape === 'square') return `<rect x="${cx - r}" y="${cy - r}" width="${2 * r}" height="${2 * r}" fill="${hex(o.color)}"/>`;
    return `<polygon points="${cx},${cy - r} ${cx - r},${cy + r} ${cx + r},${cy + r}" fill="${hex(o.color)}"/>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">${defs}<rect width="100%" height="100%" fill="${fill}"/>${shapes.join('')}</svg>`;
}

export async function drawScene(spec: SceneSpec, attrs: SceneAttributes, size = 128): Promise<RgbImage> {
  const { data, info } = await sharp(Buffer.from(sceneSvg(spec, attrs, size))).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

export async function drawScenePng(spec: SceneSpec, attrs: SceneAttributes, size = 128): Promise<Buffer> {
  return sharp(Buffer.from(sceneSvg(spec, attrs, size))).png().toBuffer();
}

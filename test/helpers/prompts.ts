/**
 * What a tiny-shapes prompt names, read from its words (for checking documented examples): the background colour
 * ("... on a blue background"), and each object's colour and shape, with size and position when named.
 */
import type { SceneSpec } from '../../pipelines/evaluation/evaluator.ts';
import type { Expectation, ExpectedObject } from '../../pipelines/evaluation/loose-score.ts';

const SHAPES = ['circle', 'square', 'triangle'];
const SIZES: Record<string, string> = { large: 'large', big: 'large', huge: 'large', small: 'small', tiny: 'small', little: 'small' };
const POSITIONS: Record<string, string> = { left: 'left', right: 'right', top: 'top', bottom: 'bottom', centre: 'centre', center: 'centre', middle: 'centre' };

export function expectationOf(spec: SceneSpec, prompt: string): Expectation {
  const words = prompt.toLowerCase().match(/[a-z]+/g) ?? [];
  const colors = Object.keys(spec.palette);
  let background: Expectation['background'] = null;
  const objects: ExpectedObject[] = [];
  for (let i = 0; i < words.length; i++) {
    if (!colors.includes(words[i]!)) continue;
    if (words[i + 1] === 'background') {
      background = { kind: 'plain', color: words[i]! };
      continue;
    }
    const shapeAt = words.findIndex((w, k) => k > i && k <= i + 2 && SHAPES.includes(w));
    if (shapeAt < 0) continue;
    const size = SIZES[words[i - 1] ?? ''] ?? null;
    const rest = words.slice(shapeAt + 1, shapeAt + 5);
    const until = rest.findIndex((w) => colors.includes(w) || w === 'and');
    const place = (until < 0 ? rest : rest.slice(0, until)).map((w) => POSITIONS[w]).find((p) => p !== undefined) ?? null;
    objects.push({ color: words[i]!, shape: words[shapeAt]!, size, position: place });
  }
  return { background, objects };
}

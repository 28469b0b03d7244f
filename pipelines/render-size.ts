/**
 * The size a render runs at. A model renders well only near the size it was trained at: asked for a size outside
 * the pack's recommended range (AUTOMATIC1111 clients send 512x512 whatever the model), the render runs at the size
 * a stream of that shape would get (pipelines/aspect.ts: the closest aspect within the training size's pixels) and
 * the image is resized to the size asked for, with a note. strict_size renders at the size asked for.
 */
import { sizeForAspect } from './aspect.ts';
import { MAX_SIDE, type GenerationParams } from './params.ts';

export interface SizeChoice {
  readonly width: number;
  readonly height: number;
  readonly notes: readonly string[];
}

export interface SizeRules {
  /** [min, max] side in pixels the model renders well at. */
  readonly range: readonly [number, number];
  /** The training size: out of range, a render gets at most its square's pixels. */
  readonly trainingSize: number;
  /** Sides must be multiples of this. */
  readonly multiple: number;
}

/** The render size for an output of width x height. */
export function chooseRenderSize(width: number, height: number, rules: SizeRules, params: Pick<GenerationParams, 'strict_size'>): SizeChoice {
  const [min, max] = rules.range;
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  if (params.strict_size || (long <= max && short >= min)) return { width, height, notes: [] };
  const { width: w, height: h } = sizeForAspect(width / height, { pixels: rules.trainingSize ** 2, multiple: rules.multiple, maxSide: MAX_SIDE });
  // a shape the rule itself picks (160x96 for 16:9 on a 128 model) renders as it is
  if (w === width && h === height) return { width, height, notes: [] };
  return {
    width: w,
    height: h,
    notes: [`${width}x${height} is outside this model's size range ${min}-${max}: rendered at ${w}x${h} and resized (strict_size: true renders at ${width}x${height})`],
  };
}

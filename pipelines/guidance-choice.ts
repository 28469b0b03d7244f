/**
 * The guidance a request really gets. Few-step models want little guidance, and clients do not know that:
 * - a scale outside the pack's recommended range is clamped into it (AUTOMATIC1111 clients send cfg_scale 7 by
 *   default; an LCM model drifts colours and adds noise above ~2);
 * - a negative prompt under RCFG self, which never reads it (its uncond estimate is the residual noise), moves to a
 *   kind that does: full CFG for a render, RCFG initialize for a stream (one extra UNet row per frame, not N).
 * Each change comes back as a note the interface passes on. With strict_guidance the request is taken as it is.
 */
import type { GenerationParams } from './params.ts';
import type { GuidanceKind } from './rcfg.ts';

/** A render of whole images, or a stream of frames (where every extra UNet row costs frame rate). */
export type Flow = 'render' | 'stream';

export interface GuidanceChoice {
  readonly kind: GuidanceKind;
  readonly scale: number;
  readonly notes: readonly string[];
}

/** The guidance kind and scale to use for `params` on a pack whose recommended scales are `range` ([min, max]). */
export function chooseGuidance(
  params: Pick<GenerationParams, 'guidance' | 'guidance_scale' | 'negative_prompt' | 'strict_guidance'>,
  range: readonly [number, number],
  flow: Flow,
): GuidanceChoice {
  let kind: GuidanceKind = params.guidance;
  let scale = params.guidance_scale;
  const notes: string[] = [];
  const negative = params.negative_prompt.trim() !== '';
  if (!params.strict_guidance) {
    // 1. a negative prompt needs an unconditional UNet row to act through
    if (negative && kind === 'self') {
      kind = flow === 'stream' ? 'initialize' : 'full';
      notes.push(`negative prompt given: guidance self ignores it, so ${kind} guidance is used (strict_guidance: true keeps self)`);
    }
    // 2. the pack's range (guidance none has no scale to clamp)
    const [min, max] = range;
    const clamped = Math.min(max, Math.max(min, scale));
    if (kind !== 'none' && clamped !== scale) {
      notes.push(`guidance scale ${scale} is outside this model's recommended range ${min}-${max}: ${clamped} is used (strict_guidance: true keeps ${scale})`);
      scale = clamped;
    }
  }
  // 3. say so when the negative prompt still cannot act (gamma <= 1 leaves only the conditional prediction)
  if (negative && (kind === 'none' || kind === 'self' || scale <= 1)) {
    notes.push(`the negative prompt has no effect with guidance ${kind}${kind === 'none' || kind === 'self' ? '' : ` at scale ${scale}`}: use full or initialize above 1`);
  }
  return { kind, scale, notes };
}

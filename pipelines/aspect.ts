/**
 * Frame size from the input's shape. A model is trained at one pixel count (tiny-shapes: 128 x 128, SD 1.5:
 * 512 x 512) and accepts sides in multiples of its VAE factor x UNet down-sampling (32 for tiny-shapes, 8 or
 * 64 for SD exports). A camera is 16:9 or 4:3, so squeezing it into the square loses most of the picture.
 * The rule used by streams, videos and batch renders alike:
 *
 *   among the sizes whose sides are multiples of `multiple` (at most `maxSide`) and whose pixels fit the
 *   budget while covering at least half of it, take those whose aspect is closest to the input's (within
 *   0.5 %, which absorbs a rounded aspect such as 1.7778) and of those the largest.
 *
 * tiny-shapes (budget 128 x 128, multiple 32): 16:9 -> 160 x 96, 4:3 -> 128 x 96, 1:1 -> 128 x 128,
 * 9:16 -> 96 x 160. What the chosen size still differs from the input's aspect is cropped or padded (`fit`).
 */

export interface SizeRule {
  /** Largest pixel count (width x height); the model's training size squared. */
  readonly pixels: number;
  /** Both sides are multiples of this. */
  readonly multiple: number;
  /** Largest side. */
  readonly maxSide: number;
}

/** Aspects this close (relative) to the best achievable one count as equal; the larger size then wins. */
const ASPECT_TOLERANCE = 0.005;
/** A chosen size covers at least this share of the budget when any size can (keeps the model's detail). */
const MIN_BUDGET_SHARE = 0.5;

/** How far two aspects are apart, symmetric in width/height (log ratio). */
function aspectError(width: number, height: number, aspect: number): number {
  return Math.abs(Math.log(width / height / aspect));
}

/** The largest size within the rule that has (nearly) the given aspect (width / height). */
export function sizeForAspect(aspect: number, rule: SizeRule): { width: number; height: number } {
  if (!(aspect > 0) || !Number.isFinite(aspect)) throw new RangeError(`aspect must be a positive number, got ${aspect}`);
  const { pixels, multiple: m, maxSide } = rule;
  // 1. every size on the grid within the budget, with its aspect error
  const candidates: { width: number; height: number; error: number }[] = [];
  for (let height = m; height <= maxSide; height += m) {
    const ideal = height * aspect;
    for (const width of new Set([Math.floor(ideal / m) * m, Math.ceil(ideal / m) * m])) {
      if (width < m || width > maxSide || width * height > pixels) continue;
      candidates.push({ width, height, error: aspectError(width, height, aspect) });
    }
  }
  if (candidates.length === 0) return { width: m, height: m };
  // 2. not far below the budget, when the grid allows it
  const large = candidates.filter((c) => c.width * c.height >= MIN_BUDGET_SHARE * pixels);
  const pool = large.length > 0 ? large : candidates;
  // 3. the closest aspect, then the most pixels
  const best = Math.min(...pool.map((c) => c.error));
  const close = pool.filter((c) => c.error <= best + ASPECT_TOLERANCE);
  const chosen = close.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
  return { width: chosen.width, height: chosen.height };
}

/** The other side for one given side at an aspect, rounded to the multiple (at least one multiple). */
export function otherSide(given: number, aspect: number, multiple: number, maxSide: number, givenIs: 'width' | 'height'): number {
  const ideal = givenIs === 'width' ? given / aspect : given * aspect;
  return Math.min(maxSide - (maxSide % multiple), Math.max(multiple, Math.round(ideal / multiple) * multiple));
}

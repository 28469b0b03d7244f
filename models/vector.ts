/** Vector maths shared by the similarity filter, prompt blending and the expert router, on flat arrays. */

/** Cosine similarity of two equally long vectors; 0 when either is all zeros. Sums in double precision. */
export function cosineSimilarity(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i]! * y[i]!;
    xx += x[i]! * x[i]!;
    yy += y[i]! * y[i]!;
  }
  const denom = Math.sqrt(xx * yy);
  return denom === 0 ? 0 : xy / denom;
}

/** Each byte value as the float32 pixel in [-1, 1] an image tensor holds for it (v / 127.5 - 1). */
const PIXEL = Float64Array.from({ length: 256 }, (_, v) => Math.fround(v / 127.5 - 1));

/**
 * cosineSimilarity of two interleaved RGB byte images [H, W, 3] taken as pixels in [-1, 1]: exactly what
 * cosineSimilarity gives for their [3, H, W] float tensors (same values, summed in the same planar order),
 * without making them.
 */
export function pixelCosineSimilarity(x: Uint8Array, y: Uint8Array): number {
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let c = 0; c < 3; c++) {
    for (let i = c; i < x.length; i += 3) {
      const a = PIXEL[x[i]!]!;
      const b = PIXEL[y[i]!]!;
      xy += a * b;
      xx += a * a;
      yy += b * b;
    }
  }
  const denom = Math.sqrt(xx * yy);
  return denom === 0 ? 0 : xy / denom;
}

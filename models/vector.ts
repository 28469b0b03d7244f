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

/**
 * Vector helpers on flat Float32Arrays. The pipeline passes latents and images as flat rows ([4 * h * w],
 * [3 * H * W]); only the runtime boundary (models/runtime/onnx.ts) attaches dims.
 */
export function dot(x: Float32Array, y: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * y[i]!;
  return s;
}

/** Cosine similarity of two equally long vectors; 0 when either is all zeros. */
export function cosineSimilarity(x: Float32Array, y: Float32Array): number {
  const denom = Math.sqrt(dot(x, x) * dot(y, y));
  return denom === 0 ? 0 : dot(x, y) / denom;
}

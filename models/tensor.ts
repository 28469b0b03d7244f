/**
 * A thin float tensor: the data, the dims, and only the operations the pipeline needs.
 * Row-major; the first dim is the batch. Everything the UNet sees goes through here as float32;
 * the runtime converts to the model's dtype at the boundary.
 */
export interface Tensor {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

export function tensor(data: Float32Array, dims: readonly number[]): Tensor {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (data.length !== expected) {
    throw new Error(`tensor data has ${data.length} values, dims [${dims.join(', ')}] need ${expected}`);
  }
  return { data, dims: [...dims] };
}

export function zeros(dims: readonly number[]): Tensor {
  return tensor(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

/** Size of one batch row (all dims but the first). */
export function rowSize(t: Tensor): number {
  return t.dims.slice(1).reduce((a, b) => a * b, 1);
}

/** Row `i` as a view (no copy). */
export function row(t: Tensor, i: number): Float32Array {
  const n = rowSize(t);
  return t.data.subarray(i * n, (i + 1) * n);
}

/** Stacks equally shaped rows into one batch tensor: rows of [...rest] -> [N, ...rest]. */
export function stack(rows: readonly Float32Array[], rest: readonly number[]): Tensor {
  const n = rest.reduce((a, b) => a * b, 1);
  const out = new Float32Array(rows.length * n);
  rows.forEach((r, i) => {
    if (r.length !== n) throw new Error(`row ${i} has ${r.length} values, expected ${n}`);
    out.set(r, i * n);
  });
  return tensor(out, [rows.length, ...rest]);
}

/** a * x + b * y, elementwise, into a new array. */
export function axpby(a: number, x: Float32Array, b: number, y: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = a * x[i]! + b * y[i]!;
  return out;
}

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

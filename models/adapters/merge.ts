/**
 * Merging LoRA adapters into an ONNX UNet's weights (REFERENCE §3, §4): W' = W + sum_i lambda_i (alpha_i / r_i) up_i @ down_i.
 * MatMul initializers are stored [in, out] (the exporter pre-transposes Linear weights), so they get dW^T;
 * Gemm (transB = 1) and Conv weights are [out, in(, kh, kw)] and get dW as is. The sum is accumulated in
 * float64 per initializer and rounded once. The result is a patched copy of the model bytes (nothing is
 * written to disk); the base bytes are never modified.
 */
import { ServiceError } from '../errors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../runtime/float16.ts';
import { kohyaNodeTable, type KohyaAdapter, type LoraLayer } from './kohya.ts';
import { ONNX_FLOAT, ONNX_FLOAT16, type OnnxGraphIndex, type OnnxInitializer, type OnnxNode } from './onnx-graph.ts';

/** Relative overlap |B_i^T B_j|_F / (|B_i|_F |B_j|_F) above which two adapters are reported as sharing directions. */
export const OVERLAP_TOLERANCE = 1e-3;

export interface WeightedAdapter {
  readonly name: string;
  /** lambda: 1 applies the adapter as trained; the paper merges at 0.6..1. */
  readonly weight: number;
  readonly adapter: KohyaAdapter;
}

/** Where one LoRA layer lands: the initializer and whether it is stored [out, in] or transposed [in, out]. */
export interface MergeTarget {
  readonly node: OnnxNode;
  readonly initializer: OnnxInitializer;
  readonly layout: 'out_in' | 'in_out';
}

export interface MergeResult {
  readonly bytes: Uint8Array;
  readonly warnings: string[];
  /** Initializers changed. */
  readonly patched: number;
}

function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * Finds the initializer a layer patches and checks that dW fits it. Returns undefined when no node has the
 * layer's key; throws 'model_invalid' when a node matches but the shapes do not (an adapter for another model).
 */
export function resolveTarget(index: OnnxGraphIndex, table: ReadonlyMap<string, OnnxNode>, layer: LoraLayer, label: string): MergeTarget | undefined {
  const node = table.get(layer.key);
  if (!node) return undefined;
  const weightName = node.inputs[1] ?? '';
  let initializer = index.initializers.get(weightName);
  let layout: MergeTarget['layout'];
  if (node.opType === 'MatMul') {
    layout = 'in_out';
    const producer = index.producers.get(weightName);
    if (!initializer && producer?.opType === 'Transpose' && index.initializers.has(producer.inputs[0] ?? '')) {
      initializer = index.initializers.get(producer.inputs[0]!); // weight kept [out, in] behind a Transpose node
      layout = 'out_in';
    }
  } else if (node.opType === 'Gemm') layout = node.transB ? 'out_in' : 'in_out';
  else layout = 'out_in';
  if (!initializer) {
    throw new ServiceError('unsupported', `${label}: ${layer.key} maps to node ${node.name}, whose weight ${weightName} is not an initializer`);
  }
  const dims = initializer.dims;
  const [out, inFlat] = layout === 'out_in' ? [dims[0] ?? 0, product(dims.slice(1))] : [dims[dims.length - 1] ?? 0, product(dims.slice(0, -1))];
  const kernelOk = node.opType !== 'Conv' || !layer.kernel || (dims[2] === layer.kernel[0] && dims[3] === layer.kernel[1]);
  if (out !== layer.outFeatures || inFlat !== layer.inFeatures || !kernelOk) {
    throw new ServiceError(
      'model_invalid',
      `${label}: ${layer.key} has dW [${layer.outFeatures}, ${layer.inFeatures}${layer.kernel ? ` (${layer.kernel.join('x')} kernel)` : ''}] but ${node.name}'s weight ${initializer.name} is [${dims.join(', ')}]: the adapter was trained for another model`,
    );
  }
  if (initializer.storage === 'external') {
    throw new ServiceError('unsupported', `${label}: ${initializer.name} is stored as external data; merge adapters into a model with embedded weights`);
  }
  if (initializer.dataType !== ONNX_FLOAT && initializer.dataType !== ONNX_FLOAT16) {
    throw new ServiceError('unsupported', `${label}: ${initializer.name} has ONNX data type ${initializer.dataType}; only float32 and float16 weights can be merged`);
  }
  return { node, initializer, layout };
}

/** Checks an adapter against a graph: the layers it matches, the keys it does not, shape errors thrown. */
export function matchAdapter(index: OnnxGraphIndex, adapter: KohyaAdapter, label: string): { matched: number; unmatched: string[] } {
  const table = kohyaNodeTable(index);
  const unmatched: string[] = [];
  let matched = 0;
  for (const layer of adapter.layers) {
    if (resolveTarget(index, table, layer, label)) matched++;
    else unmatched.push(layer.key);
  }
  return { matched, unmatched };
}

/** dW = scale * up @ down, added into `delta` in the initializer's layout. */
function accumulate(delta: Float64Array, layer: LoraLayer, scale: number, layout: MergeTarget['layout']): void {
  const { rank: r, outFeatures: out, inFeatures: inn, up, down } = layer;
  const row = new Float64Array(inn);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const u = up[o * r + k]! * scale;
      if (u === 0) continue;
      const base = k * inn;
      for (let i = 0; i < inn; i++) row[i]! += u * down[base + i]!;
    }
    if (layout === 'out_in') for (let i = 0; i < inn; i++) delta[o * inn + i]! += row[i]!;
    else for (let i = 0; i < inn; i++) delta[i * out + o]! += row[i]!;
  }
}

/** Warnings for adapter pairs whose down-projections share directions on common layers (B_i^T B_j != 0). */
export function overlapWarnings(adapters: readonly WeightedAdapter[]): string[] {
  const warnings: string[] = [];
  for (let a = 0; a < adapters.length; a++) {
    for (let b = a + 1; b < adapters.length; b++) {
      const A = adapters[a]!;
      const B = adapters[b]!;
      const other = new Map(B.adapter.layers.map((l) => [l.key, l] as const));
      let shared = 0;
      let overlapping = 0;
      let worst = 0;
      for (const la of A.adapter.layers) {
        const lb = other.get(la.key);
        if (!lb || lb.inFeatures !== la.inFeatures) continue;
        shared++;
        const ratio = downOverlap(la, lb);
        if (ratio > OVERLAP_TOLERANCE) overlapping++;
        worst = Math.max(worst, ratio);
      }
      if (overlapping > 0) {
        warnings.push(
          `adapters ${A.name} and ${B.name} overlap: their down-projections are not orthogonal on ${overlapping} of ${shared} shared layers ` +
            `(max |B_i^T B_j| / (|B_i| |B_j|) = ${worst.toFixed(3)}); merged, each may change the other's concept`,
        );
      }
    }
  }
  return warnings;
}

function downOverlap(a: LoraLayer, b: LoraLayer): number {
  const n = a.inFeatures;
  let cross = 0;
  for (let i = 0; i < a.rank; i++) {
    for (let j = 0; j < b.rank; j++) {
      let dot = 0;
      for (let k = 0; k < n; k++) dot += a.down[i * n + k]! * b.down[j * n + k]!;
      cross += dot * dot;
    }
  }
  const norm = (l: LoraLayer) => Math.sqrt(l.down.reduce((s, v) => s + v * v, 0));
  const d = norm(a) * norm(b);
  return d === 0 ? 0 : Math.sqrt(cross) / d;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Layers merged between two yields (each a few hundred microseconds for tiny-shapes, ms for SD). */
const LAYERS_PER_YIELD = 4;

/**
 * Merges weighted adapters into a copy of `base` (an ONNX model, `index` its graph index).
 * Yields to the event loop every few layers so streams keep running while a merge is computed.
 */
export async function mergeAdapters(base: Uint8Array, index: OnnxGraphIndex, adapters: readonly WeightedAdapter[], label = 'unet'): Promise<MergeResult> {
  // 1. targets and float64 deltas per initializer
  const table = kohyaNodeTable(index);
  const warnings: string[] = [];
  const deltas = new Map<string, { init: OnnxInitializer; delta: Float64Array }>();
  let merged = 0;
  for (const { name, weight, adapter } of adapters) {
    if (!Number.isFinite(weight)) throw new ServiceError('bad_request', `adapter ${name}: weight ${weight} is not a finite number`);
    const unmatched: string[] = [];
    for (const layer of adapter.layers) {
      const target = resolveTarget(index, table, layer, `adapter ${name}`);
      if (!target) {
        unmatched.push(layer.key);
        continue;
      }
      const entry = deltas.get(target.initializer.name) ?? { init: target.initializer, delta: new Float64Array(product(target.initializer.dims)) };
      deltas.set(target.initializer.name, entry);
      accumulate(entry.delta, layer, (weight * layer.alpha) / layer.rank, target.layout);
      if (++merged % LAYERS_PER_YIELD === 0) await yieldToEventLoop();
    }
    if (unmatched.length > 0) {
      const shown = unmatched.slice(0, 3).join(', ');
      warnings.push(`adapter ${name}: ${unmatched.length} of ${adapter.layers.length} keys match no node of ${label} and were skipped (${shown}${unmatched.length > 3 ? ', ...' : ''})`);
    }
    if (adapter.ignored.length > 0) warnings.push(`adapter ${name}: ${adapter.ignored.length} tensors are not UNet LoRA weights and were ignored`);
    await yieldToEventLoop();
  }
  warnings.push(...overlapWarnings(adapters));
  await yieldToEventLoop();
  // 2. patch a copy: same byte lengths, so the rest of the model is untouched
  const bytes = base.slice();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const { init, delta } of deltas.values()) {
    if (init.dataType === ONNX_FLOAT) {
      if (init.length !== 4 * delta.length) throw new ServiceError('model_invalid', `${label}: ${init.name} holds ${init.length} bytes for ${delta.length} float32 values`);
      for (let i = 0; i < delta.length; i++) {
        const at = init.offset + 4 * i;
        view.setFloat32(at, view.getFloat32(at, true) + delta[i]!, true);
      }
    } else {
      if (init.storage !== 'raw' || init.length !== 2 * delta.length) throw new ServiceError('model_invalid', `${label}: ${init.name} holds ${init.length} bytes for ${delta.length} float16 values`);
      const half = new Uint16Array(delta.length);
      for (let i = 0; i < delta.length; i++) half[i] = view.getUint16(init.offset + 2 * i, true);
      const values = float16ToFloat32(half);
      for (let i = 0; i < delta.length; i++) values[i] = values[i]! + delta[i]!;
      const merged = float32ToFloat16(values);
      for (let i = 0; i < delta.length; i++) view.setUint16(init.offset + 2 * i, merged[i]!, true);
    }
  }
  return { bytes, warnings, patched: deltas.size };
}

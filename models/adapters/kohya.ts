/**
 * kohya LoRA files (REFERENCE §4) and their mapping onto an exported UNet.
 *   lora_unet_<module path with _>.lora_down.weight  [r, in] (Linear) or [r, in, kh, kw] (Conv)
 *   lora_unet_<module path with _>.lora_up.weight    [out, r] or [out, r, 1, 1]
 *   lora_unet_<module path with _>.alpha             scalar (absent: alpha = r)
 *   dW = weight * (alpha / r) * up @ down            [out, in] (Conv: [out, in * kh * kw])
 * ONNX node names from torch / optimum follow module paths: /down_blocks.1/attentions.0/.../attn1/to_q/MatMul.
 * Replacing "/" and "." by "_" gives `<key>_MatMul | _Gemm | _Conv`, the node whose weight input gets dW.
 * A file may also bundle learned token embeddings for its trigger words, under AUTOMATIC1111's keys
 *   bundle_emb.<word>.string_to_param.*              [n, D] (n vectors replace the word in a prompt)
 * (Mix-of-Show's ED-LoRA and textual inversion train these; see models/adapters/concept-tokens.ts).
 */
import { ServiceError } from '../errors.ts';
import type { OnnxGraphIndex, OnnxNode } from './onnx-graph.ts';
import type { SafetensorsFile, Tensor } from './safetensors.ts';

export const KOHYA_UNET_PREFIX = 'lora_unet_';
const DOWN = '.lora_down.weight';
const UP = '.lora_up.weight';
const ALPHA = '.alpha';
/** Ops whose second input is a weight an adapter can patch. */
export const PATCHABLE_OPS = ['MatMul', 'Gemm', 'Conv'] as const;

export interface LoraLayer {
  /** kohya key without suffix, e.g. lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q */
  readonly key: string;
  readonly rank: number;
  readonly alpha: number;
  /** [r, inFlat] row-major (Conv kernels flattened in, kh, kw). */
  readonly down: Float32Array;
  /** [out, r] row-major. */
  readonly up: Float32Array;
  readonly outFeatures: number;
  /** in (Linear) or in * kh * kw (Conv). */
  readonly inFeatures: number;
  /** [kh, kw] for Conv-shaped downs, undefined for Linear. */
  readonly kernel: readonly [number, number] | undefined;
}

/** A learned embedding for a prompt word: `count` vectors of `dim` values, row-major. */
export interface BundledEmbedding {
  readonly word: string;
  readonly vectors: Float32Array;
  readonly count: number;
  readonly dim: number;
}

export interface KohyaAdapter {
  readonly layers: readonly LoraLayer[];
  /** Token embeddings bundled with the LoRA, sorted by word (none for most files). */
  readonly embeddings: readonly BundledEmbedding[];
  /** Keys that are not UNet LoRA keys (text encoder LoRA, unknown tensors): ignored. */
  readonly ignored: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
}

function bad(label: string, message: string): ServiceError {
  return new ServiceError('model_invalid', `${label}: ${message}`);
}

const BUNDLED_EMBEDDING = /^bundle_emb\.(.+)\.string_to_param\.\*$/;
/** Trigger words are single words (letters only, as the tokenizer's pre-tokenizer splits a prompt). */
export const TRIGGER_WORD = /^\p{L}{1,64}$/u;

function readEmbedding(word: string, tensor: Tensor, label: string): BundledEmbedding {
  if (!TRIGGER_WORD.test(word)) throw bad(label, `bundled embedding "${word}": the word must be letters only (1-64)`);
  const s = tensor.shape;
  if (!(s.length === 1 || s.length === 2) || s.some((d) => d === 0)) throw bad(label, `bundled embedding "${word}" has shape [${s.join(', ')}]; expected [n, dim] or [dim]`);
  if (!tensor.data.every(Number.isFinite)) throw bad(label, `bundled embedding "${word}" has non-finite values`);
  const dim = s[s.length - 1]!;
  return { word: word.toLowerCase(), vectors: tensor.data, count: tensor.data.length / dim, dim };
}

/** Groups a safetensors file into LoRA layers (checking that down, up and alpha agree) and bundled embeddings. */
export function readKohyaAdapter(file: SafetensorsFile, label = 'adapter'): KohyaAdapter {
  const groups = new Map<string, { down?: Tensor; up?: Tensor; alpha?: Tensor }>();
  const ignored: string[] = [];
  const embeddings: BundledEmbedding[] = [];
  for (const [name, tensor] of file.tensors) {
    const bundled = BUNDLED_EMBEDDING.exec(name);
    if (bundled) {
      embeddings.push(readEmbedding(bundled[1]!, tensor, label));
      continue;
    }
    const suffix = [DOWN, UP, ALPHA].find((s) => name.endsWith(s));
    if (!name.startsWith(KOHYA_UNET_PREFIX) || !suffix) {
      ignored.push(name);
      continue;
    }
    const key = name.slice(0, -suffix.length);
    const g = groups.get(key) ?? {};
    if (suffix === DOWN) g.down = tensor;
    else if (suffix === UP) g.up = tensor;
    else g.alpha = tensor;
    groups.set(key, g);
  }
  const layers: LoraLayer[] = [];
  for (const [key, g] of groups) {
    if (!g.down || !g.up) throw bad(label, `${key} has ${g.down ? 'no lora_up.weight' : 'no lora_down.weight'}`);
    const ds = g.down.shape;
    const us = g.up.shape;
    const conv = ds.length === 4;
    if (!(ds.length === 2 || conv)) throw bad(label, `${key}.lora_down.weight has shape [${ds.join(', ')}]; expected [r, in] or [r, in, kh, kw]`);
    const upOk = conv ? us.length === 4 && us[2] === 1 && us[3] === 1 : us.length === 2;
    if (!upOk) throw bad(label, `${key}.lora_up.weight has shape [${us.join(', ')}]; expected ${conv ? '[out, r, 1, 1]' : '[out, r]'}`);
    const rank = ds[0]!;
    if (rank === 0 || us[1] !== rank) throw bad(label, `${key}: lora_down rank ${rank} and lora_up rank ${us[1]} differ`);
    if (g.alpha && g.alpha.data.length !== 1) throw bad(label, `${key}.alpha is not a scalar`);
    const alpha = g.alpha ? g.alpha.data[0]! : rank;
    if (!Number.isFinite(alpha)) throw bad(label, `${key}.alpha is not finite`);
    for (const [what, t] of [['lora_down', g.down], ['lora_up', g.up]] as const) {
      if (!t.data.every(Number.isFinite)) throw bad(label, `${key}.${what}.weight has non-finite values`);
    }
    layers.push({
      key,
      rank,
      alpha,
      down: g.down.data,
      up: g.up.data,
      outFeatures: us[0]!,
      inFeatures: g.down.data.length / rank,
      kernel: conv ? [ds[2]!, ds[3]!] : undefined,
    });
  }
  if (layers.length === 0) throw bad(label, 'no UNet LoRA weights (lora_unet_*.lora_down.weight / lora_up.weight)');
  layers.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  embeddings.sort((a, b) => (a.word < b.word ? -1 : a.word > b.word ? 1 : 0));
  for (let i = 1; i < embeddings.length; i++) {
    if (embeddings[i]!.word === embeddings[i - 1]!.word) throw bad(label, `two bundled embeddings for the word "${embeddings[i]!.word}"`);
  }
  return { layers, embeddings, ignored, metadata: file.metadata };
}

/** kohya key of an ONNX node ("/a.0/b/MatMul" -> "lora_unet_a_0_b"), or undefined for other ops. */
export function kohyaKeyOfNode(node: Pick<OnnxNode, 'name' | 'opType'>): string | undefined {
  if (!(PATCHABLE_OPS as readonly string[]).includes(node.opType)) return undefined;
  const flat = node.name.replace(/^\//, '').replace(/[/.]/g, '_');
  const suffix = `_${node.opType}`;
  if (!flat.endsWith(suffix)) return undefined;
  return KOHYA_UNET_PREFIX + flat.slice(0, -suffix.length);
}

/** Every patchable node of a graph by its kohya key. */
export function kohyaNodeTable(index: OnnxGraphIndex): Map<string, OnnxNode> {
  const table = new Map<string, OnnxNode>();
  for (const node of index.nodes) {
    const key = kohyaKeyOfNode(node);
    if (key && !table.has(key)) table.set(key, node);
  }
  return table;
}

/** The kohya key of a torch module path ("down_blocks.1.attentions.0.proj_in" -> "lora_unet_down_blocks_1_attentions_0_proj_in"). */
export function kohyaKeyOfModule(path: string): string {
  return KOHYA_UNET_PREFIX + path.replace(/\./g, '_');
}

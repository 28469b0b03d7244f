/**
 * Concept tokens: learned embeddings that adapters bundle for their trigger words (textual inversion; Mix-of-Show's
 * ED-LoRA, on which Orthogonal Adaptation builds, trains one per concept beside its LoRA). Each vector becomes a
 * new row appended to the text encoder's token table (the Gather fed by input_ids), and the prompt word maps to
 * the new ids. The rest of the model is copied byte for byte; only the table's TensorProto and the lengths of the
 * messages around it are rewritten (protobuf wire format, as onnx-graph.ts reads it).
 *
 * The legacy CLIP export pools at argmax(input_ids) (EOS has the largest vocabulary id): with appended ids the
 * pooled output of a prompt with a concept token is read at that token. Only the expert router reads it, and
 * requests with adapters never route (they run on the full UNet), so it is left as is.
 */
import { ServiceError } from '../errors.ts';
import { float32ToFloat16 } from '../runtime/float16.ts';
import type { BundledEmbedding } from './kohya.ts';
import { ONNX_FLOAT, ONNX_FLOAT16, type OnnxGraphIndex, type OnnxInitializer } from './onnx-graph.ts';
import { concat, initializerWithData, replaceGraphFields } from './onnx-rewrite.ts';

/** Prompt words and the token ids that replace them. */
export type ConceptTokenIds = ReadonlyMap<string, readonly number[]>;

export interface NamedEmbedding {
  /** The adapter it comes from (for errors). */
  readonly adapter: string;
  readonly embedding: BundledEmbedding;
}

/** The token table: the initializer gathered by input_ids (directly or through a Cast). */
export function tokenTable(index: OnnxGraphIndex, label = 'text_encoder'): OnnxInitializer {
  const fromIds = (value: string): boolean => {
    if (value === 'input_ids') return true;
    const producer = index.producers.get(value);
    return producer?.opType === 'Cast' && producer.inputs[0] === 'input_ids';
  };
  const gather = index.nodes.find((n) => n.opType === 'Gather' && n.inputs[1] !== undefined && fromIds(n.inputs[1]) && index.initializers.has(n.inputs[0]!));
  const table = gather && index.initializers.get(gather.inputs[0]!);
  if (!table || table.dims.length !== 2) throw new ServiceError('unsupported', `${label}: no token embedding table (a Gather of an initializer by input_ids) to add concept tokens to`);
  if (table.storage === 'external') throw new ServiceError('unsupported', `${label}: the token embedding table is in external data; concept tokens need it inside model.onnx`);
  if (table.dataType !== ONNX_FLOAT && table.dataType !== ONNX_FLOAT16) throw new ServiceError('unsupported', `${label}: token embedding table has ONNX data type ${table.dataType}; expected float32 or float16`);
  return table;
}

function tableValues(bytes: Uint8Array, table: OnnxInitializer, appended: Float32Array): Uint8Array {
  const old = bytes.subarray(table.offset, table.offset + table.length);
  const added = table.dataType === ONNX_FLOAT16 ? float32ToFloat16(appended) : appended;
  const littleEndian = new Uint8Array(added.buffer, added.byteOffset, added.byteLength); // Node runs little-endian
  return concat([old, littleEndian]);
}

/**
 * A copy of the text encoder with the embeddings' vectors appended to its token table, and the ids each
 * prompt word maps to. Two adapters bundling the same word, or vectors of the wrong width, are errors.
 */
export function addConceptTokens(bytes: Uint8Array, index: OnnxGraphIndex, embeddings: readonly NamedEmbedding[], label = 'text_encoder'): { bytes: Uint8Array; ids: ConceptTokenIds } {
  const table = tokenTable(index, label);
  const [vocab, dim] = table.dims as [number, number];
  const ids = new Map<string, number[]>();
  const owner = new Map<string, string>();
  const appended = new Float32Array(embeddings.reduce((n, e) => n + e.embedding.count, 0) * dim);
  let next = vocab;
  for (const { adapter, embedding } of embeddings) {
    const other = owner.get(embedding.word);
    if (other !== undefined) throw new ServiceError('bad_request', `adapters ${other} and ${adapter} both bring an embedding for the word "${embedding.word}"`, { field: 'adapters' });
    if (embedding.dim !== dim) throw new ServiceError('model_invalid', `adapter ${adapter}: its embedding for "${embedding.word}" has ${embedding.dim} values per vector; the text encoder's tokens have ${dim}`);
    owner.set(embedding.word, adapter);
    appended.set(embedding.vectors, (next - vocab) * dim);
    ids.set(embedding.word, Array.from({ length: embedding.count }, (_, i) => next + i));
    next += embedding.count;
  }
  const replacement = initializerWithData(bytes, table, tableValues(bytes, table, appended), [next, dim]);
  return { bytes: replaceGraphFields(bytes, index, [{ range: table.field, replacement }]), ids };
}

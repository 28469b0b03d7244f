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
import protobuf from 'protobufjs/minimal.js';
import { ServiceError } from '../errors.ts';
import { float32ToFloat16 } from '../runtime/float16.ts';
import type { BundledEmbedding } from './kohya.ts';
import { ONNX_FLOAT, ONNX_FLOAT16, type OnnxGraphIndex, type OnnxInitializer } from './onnx-graph.ts';

const { Reader, Writer } = protobuf;
/** ModelProto.graph, GraphProto.initializer, TensorProto.dims / float_data / raw_data (onnx/onnx.proto). */
const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_DIMS = 1;
const TENSOR_FLOAT_DATA = 4;
const TENSOR_RAW_DATA = 9;
const WIRE_VARINT = 0;
const WIRE_LEN = 2;

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

function lengthDelimited(field: number, body: Uint8Array): Uint8Array {
  return Writer.create().uint32((field << 3) | WIRE_LEN).bytes(body).finish();
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The table's TensorProto with new dims and values; every other field of it is copied as is. */
function tensorWithRows(bytes: Uint8Array, table: OnnxInitializer, rows: number, values: Uint8Array): Uint8Array {
  const kept: Uint8Array[] = [];
  const r = Reader.create(bytes.subarray(0, table.field.end));
  r.pos = table.field.start;
  while (r.pos < table.field.end) {
    const at = r.pos;
    const tag = r.uint32();
    r.skipType(tag & 7);
    const field = tag >>> 3;
    if (field !== TENSOR_DIMS && field !== TENSOR_RAW_DATA && field !== TENSOR_FLOAT_DATA) kept.push(bytes.subarray(at, r.pos));
  }
  const dims = Writer.create();
  for (const d of [rows, table.dims[1]!]) dims.uint32((TENSOR_DIMS << 3) | WIRE_VARINT).int64(d);
  return concat([dims.finish(), ...kept, lengthDelimited(TENSOR_RAW_DATA, values)]);
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
  const tensor = tensorWithRows(bytes, table, next, tableValues(bytes, table, appended));
  const g = index.graph;
  const graph = concat([bytes.subarray(g.start, table.field.tag), lengthDelimited(GRAPH_INITIALIZER, tensor), bytes.subarray(table.field.end, g.end)]);
  return { bytes: concat([bytes.subarray(0, g.tag), lengthDelimited(MODEL_GRAPH, graph), bytes.subarray(g.end)]), ids };
}

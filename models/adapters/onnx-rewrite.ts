/**
 * Edits of an ONNX model at the protobuf wire level that change sizes: whole fields of the main graph (an
 * initializer, a node) are replaced by new bytes and the lengths of the GraphProto and ModelProto around them are
 * rewritten. Every other byte of the model is copied as is (see onnx-graph.ts for the index these edits use).
 * Field numbers from onnx/onnx.proto: ModelProto.graph = 7; GraphProto.node = 1, initializer = 5;
 * TensorProto.dims = 1, float_data = 4, raw_data = 9, external_data = 13, data_location = 14;
 * NodeProto.input = 1, output = 2, name = 3, op_type = 4.
 */
import protobuf from 'protobufjs/minimal.js';
import type { FieldRange, OnnxGraphIndex, OnnxInitializer } from './onnx-graph.ts';

const { Reader, Writer } = protobuf;
const MODEL_GRAPH = 7;
export const GRAPH_NODE = 1;
export const GRAPH_INITIALIZER = 5;
const TENSOR_DIMS = 1;
const TENSOR_FLOAT_DATA = 4;
const TENSOR_RAW_DATA = 9;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const NODE_INPUT = 1;
const NODE_OUTPUT = 2;
const NODE_NAME = 3;
const NODE_OP_TYPE = 4;
const WIRE_VARINT = 0;
const WIRE_LEN = 2;

export function lengthDelimited(field: number, body: Uint8Array): Uint8Array {
  return Writer.create().uint32((field << 3) | WIRE_LEN).bytes(body).finish();
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A field of the main graph and what replaces it (a whole field: tag, length and body). */
export interface GraphEdit {
  readonly range: FieldRange;
  readonly replacement: Uint8Array;
}

/** A copy of the model with the given fields of its main graph replaced; the edits must not overlap. */
export function replaceGraphFields(bytes: Uint8Array, index: OnnxGraphIndex, edits: readonly GraphEdit[]): Uint8Array {
  const g = index.graph;
  const sorted = [...edits].sort((a, b) => a.range.tag - b.range.tag);
  const parts: Uint8Array[] = [];
  let at = g.start;
  for (const e of sorted) {
    parts.push(bytes.subarray(at, e.range.tag), e.replacement);
    at = e.range.end;
  }
  parts.push(bytes.subarray(at, g.end));
  return concat([bytes.subarray(0, g.tag), lengthDelimited(MODEL_GRAPH, concat(parts)), bytes.subarray(g.end)]);
}

/** The fields of a message between start and end, except those whose numbers are in `drop`. */
function keptFields(bytes: Uint8Array, range: FieldRange, drop: readonly number[]): Uint8Array[] {
  const kept: Uint8Array[] = [];
  const r = Reader.create(bytes.subarray(0, range.end));
  r.pos = range.start;
  while (r.pos < range.end) {
    const at = r.pos;
    const tag = r.uint32();
    r.skipType(tag & 7);
    if (!drop.includes(tag >>> 3)) kept.push(bytes.subarray(at, r.pos));
  }
  return kept;
}

/**
 * An initializer field with new values stored inline (raw_data), and new dims when given; its name, data type
 * and any other field are kept. An external initializer becomes an inline one.
 */
export function initializerWithData(bytes: Uint8Array, init: OnnxInitializer, raw: Uint8Array, dims?: readonly number[]): Uint8Array {
  const drop = [TENSOR_RAW_DATA, TENSOR_FLOAT_DATA, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION, ...(dims ? [TENSOR_DIMS] : [])];
  const kept = keptFields(bytes, init.field, drop);
  const head = Writer.create();
  for (const d of dims ?? []) head.uint32((TENSOR_DIMS << 3) | WIRE_VARINT).int64(d);
  return lengthDelimited(GRAPH_INITIALIZER, concat([head.finish(), ...kept, lengthDelimited(TENSOR_RAW_DATA, raw)]));
}

/** A NodeProto field (name, op type, inputs, outputs; no attributes, default domain). */
export function nodeField(node: { readonly name: string; readonly opType: string; readonly inputs: readonly string[]; readonly outputs: readonly string[] }): Uint8Array {
  const w = Writer.create();
  for (const input of node.inputs) w.uint32((NODE_INPUT << 3) | WIRE_LEN).string(input);
  for (const output of node.outputs) w.uint32((NODE_OUTPUT << 3) | WIRE_LEN).string(output);
  w.uint32((NODE_NAME << 3) | WIRE_LEN).string(node.name).uint32((NODE_OP_TYPE << 3) | WIRE_LEN).string(node.opType);
  return lengthDelimited(GRAPH_NODE, w.finish());
}

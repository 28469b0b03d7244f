/**
 * A read-only index of an ONNX ModelProto at the protobuf wire level (protobufjs Reader): the main graph's
 * nodes (name, op, inputs, the Gemm transB attribute) and initializers (name, dims, data type, and the byte
 * range of their raw_data or packed float_data inside the model bytes). Merging adapters patches those
 * ranges in a copy of the bytes: float32/float16 payloads keep their length, so every other field of the
 * model (opsets, metadata, value infos, unknown extensions) is carried over byte for byte.
 * Field numbers from onnx/onnx.proto: ModelProto.graph = 7; GraphProto.node = 1, initializer = 5;
 * NodeProto.input = 1, output = 2, name = 3, op_type = 4, attribute = 5; AttributeProto.name = 1, i = 3;
 * TensorProto.dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9, external_data = 13, data_location = 14;
 * StringStringEntryProto.key = 1, value = 2.
 */
import protobuf from 'protobufjs/minimal.js';
import { ServiceError } from '../errors.ts';

const { Reader } = protobuf;
type ReaderT = protobuf.Reader;

/** TensorProto.DataType values the merge understands. */
export const ONNX_FLOAT = 1;
export const ONNX_FLOAT16 = 10;
const DATA_LOCATION_EXTERNAL = 1;
const WIRE_VARINT = 0;
const WIRE_LEN = 2;

export interface OnnxNode {
  readonly name: string;
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** Gemm's transB (0 when absent). */
  readonly transB: number;
  /** Where the NodeProto sits in the graph. */
  readonly field: FieldRange;
}

export interface OnnxInitializer {
  readonly name: string;
  readonly dims: readonly number[];
  readonly dataType: number;
  /** Byte range of the values inside the model bytes (raw_data, or the packed float_data payload). */
  readonly offset: number;
  readonly length: number;
  /** 'raw' little-endian raw_data; 'float_data' packed floats (also little-endian); 'external' not in the bytes. */
  readonly storage: 'raw' | 'float_data' | 'external';
  /** Where external data lives: a file beside the model, a byte offset and length (length 0: to the end of the file). */
  readonly external?: { readonly location: string; readonly offset: number; readonly length: number } | undefined;
  /** Where the TensorProto sits in the graph: its field's first byte (the tag) and the message body. */
  readonly field: FieldRange;
}

/** A length-delimited field: `tag` is the offset of its tag byte, [start, end) its body. */
export interface FieldRange {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

export interface OnnxGraphIndex {
  readonly nodes: readonly OnnxNode[];
  readonly nodesByName: ReadonlyMap<string, OnnxNode>;
  readonly initializers: ReadonlyMap<string, OnnxInitializer>;
  /** The node that produces each value name. */
  readonly producers: ReadonlyMap<string, OnnxNode>;
  /** The GraphProto inside the ModelProto (for edits that change sizes). */
  readonly graph: FieldRange;
}

function readLengthDelimited(reader: ReaderT): { start: number; end: number } {
  const length = reader.uint32();
  const start = reader.pos;
  const end = start + length;
  if (end > reader.len) throw new Error(`a field of ${length} bytes runs past the end of its message`);
  reader.pos = end;
  return { start, end };
}

function readString(bytes: Uint8Array, start: number, end: number): string {
  return new TextDecoder().decode(bytes.subarray(start, end));
}

function parseAttribute(bytes: Uint8Array, start: number, end: number): { name: string; i: number } {
  const r = Reader.create(bytes.subarray(0, end));
  r.pos = start;
  let name = '';
  let i = 0;
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    if (field === 1 && (tag & 7) === WIRE_LEN) {
      const s = readLengthDelimited(r);
      name = readString(bytes, s.start, s.end);
    } else if (field === 3 && (tag & 7) === WIRE_VARINT) i = Number(r.int64());
    else r.skipType(tag & 7);
  }
  return { name, i };
}

function parseNode(bytes: Uint8Array, { start, end }: FieldRange): Omit<OnnxNode, 'field'> {
  const r = Reader.create(bytes.subarray(0, end));
  r.pos = start;
  const inputs: string[] = [];
  const outputs: string[] = [];
  let name = '';
  let opType = '';
  let transB = 0;
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    if ((tag & 7) !== WIRE_LEN || ![1, 2, 3, 4, 5].includes(field)) {
      r.skipType(tag & 7);
      continue;
    }
    const s = readLengthDelimited(r);
    if (field === 1) inputs.push(readString(bytes, s.start, s.end));
    else if (field === 2) outputs.push(readString(bytes, s.start, s.end));
    else if (field === 3) name = readString(bytes, s.start, s.end);
    else if (field === 4) opType = readString(bytes, s.start, s.end);
    else {
      const a = parseAttribute(bytes, s.start, s.end);
      if (a.name === 'transB') transB = a.i;
    }
  }
  return { name, opType, inputs, outputs, transB };
}

function parseEntry(bytes: Uint8Array, start: number, end: number): [string, string] {
  const r = Reader.create(bytes.subarray(0, end));
  r.pos = start;
  let key = '';
  let value = '';
  while (r.pos < end) {
    const tag = r.uint32();
    if ((tag & 7) !== WIRE_LEN) {
      r.skipType(tag & 7);
      continue;
    }
    const s = readLengthDelimited(r);
    if (tag >>> 3 === 1) key = readString(bytes, s.start, s.end);
    else if (tag >>> 3 === 2) value = readString(bytes, s.start, s.end);
  }
  return [key, value];
}

function parseTensor(bytes: Uint8Array, { start, end }: FieldRange): Omit<OnnxInitializer, 'field'> {
  const r = Reader.create(bytes.subarray(0, end));
  r.pos = start;
  const dims: number[] = [];
  let dataType = 0;
  let name = '';
  let data: { offset: number; length: number; storage: 'raw' | 'float_data' } | undefined;
  let external = false;
  const entries = new Map<string, string>();
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === WIRE_VARINT) dims.push(Number(r.int64()));
    else if (field === 1 && wire === WIRE_LEN) {
      const s = readLengthDelimited(r); // packed dims
      const p = Reader.create(bytes.subarray(0, s.end));
      p.pos = s.start;
      while (p.pos < s.end) dims.push(Number(p.int64()));
    } else if (field === 2 && wire === WIRE_VARINT) dataType = r.int32();
    else if (field === 8 && wire === WIRE_LEN) {
      const s = readLengthDelimited(r);
      name = readString(bytes, s.start, s.end);
    } else if (field === 9 && wire === WIRE_LEN) {
      const s = readLengthDelimited(r);
      data = { offset: s.start, length: s.end - s.start, storage: 'raw' };
    } else if (field === 4 && wire === WIRE_LEN) {
      const s = readLengthDelimited(r);
      data = { offset: s.start, length: s.end - s.start, storage: 'float_data' };
    } else if (field === 13 && wire === WIRE_LEN) {
      const s = readLengthDelimited(r);
      const [key, value] = parseEntry(bytes, s.start, s.end);
      entries.set(key, value);
    } else if (field === 14 && wire === WIRE_VARINT) external = r.int32() === DATA_LOCATION_EXTERNAL;
    else r.skipType(wire);
  }
  if (external || !data) {
    const location = entries.get('location');
    const where = location === undefined ? undefined : { location, offset: Number(entries.get('offset') ?? 0), length: Number(entries.get('length') ?? 0) };
    return { name, dims, dataType, offset: 0, length: 0, storage: 'external', external: where };
  }
  return { name, dims, dataType, ...data };
}

/** Indexes the main graph of a model. Throws 'model_invalid' when the bytes are not an ONNX model. */
export function indexOnnxModel(bytes: Uint8Array, label = 'unet'): OnnxGraphIndex {
  try {
    // 1. ModelProto: find the graph
    const model = Reader.create(bytes);
    let graph: FieldRange | undefined;
    while (model.pos < model.len) {
      const at = model.pos;
      const tag = model.uint32();
      if (tag >>> 3 === 7 && (tag & 7) === WIRE_LEN) graph = { tag: at, ...readLengthDelimited(model) };
      else model.skipType(tag & 7);
    }
    if (!graph) throw new Error('no graph in the model');
    // 2. GraphProto: nodes and initializers
    const r = Reader.create(bytes.subarray(0, graph.end));
    r.pos = graph.start;
    const nodes: OnnxNode[] = [];
    const initializers = new Map<string, OnnxInitializer>();
    while (r.pos < graph.end) {
      const at = r.pos;
      const tag = r.uint32();
      const field = tag >>> 3;
      if ((tag & 7) === WIRE_LEN && (field === 1 || field === 5)) {
        const s = { tag: at, ...readLengthDelimited(r) };
        if (field === 1) nodes.push({ ...parseNode(bytes, s), field: s });
        else {
          const t = parseTensor(bytes, s);
          initializers.set(t.name, { ...t, field: s });
        }
      } else r.skipType(tag & 7);
    }
    const nodesByName = new Map(nodes.map((n) => [n.name, n] as const));
    const producers = new Map<string, OnnxNode>();
    for (const n of nodes) for (const o of n.outputs) producers.set(o, n);
    return { nodes, nodesByName, initializers, producers, graph };
  } catch (cause) {
    if (cause instanceof ServiceError) throw cause;
    throw new ServiceError('model_invalid', `${label}: cannot read the ONNX model for adapter merging: ${(cause as Error).message}`, { cause });
  }
}

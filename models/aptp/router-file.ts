/**
 * router.json, the prompt router of a pack's experts (APTP; models/train/experts/README.md): the file format
 * and its validation. Routing itself is in models/aptp/routing.ts.
 */
import { ServiceError } from '../errors.ts';
import { invalidField as invalid, isRecord } from '../files.ts';

export const ROUTER_TYPES = ['linear', 'codes'] as const;
export type RouterType = (typeof ROUTER_TYPES)[number];

/** A parsed router (router.json), its outputs already mapped to indices of the pack's expert list. */
export interface RouterWeights {
  readonly type: RouterType;
  /** D, the pooled text embedding's size. */
  readonly inputDim: number;
  /** [K, D] for linear, [A, D] for codes. */
  readonly weights: readonly Float32Array[];
  /** [K] for linear, [A] for codes. */
  readonly bias: Float32Array;
  /** [K, A] architecture codes (codes routers only). */
  readonly codes: readonly Float32Array[] | undefined;
  /** Class or code k -> index into the expert list. */
  readonly expertForCode: readonly number[];
}

function vector(value: unknown, length: number | undefined, source: string, field: string): Float32Array {
  if (!Array.isArray(value)) throw invalid(source, field, 'must be an array of numbers');
  if (length !== undefined && value.length !== length) throw invalid(source, field, `has ${value.length} values, expected ${length}`);
  value.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(source, `${field}[${i}]`, `is ${JSON.stringify(v)}, not a finite number`);
  });
  return Float32Array.from(value as number[]);
}

function matrix(value: unknown, cols: number, source: string, field: string): Float32Array[] {
  if (!Array.isArray(value) || value.length === 0) throw invalid(source, field, 'must be a non-empty array of rows');
  return value.map((r, i) => vector(r, cols, source, `${field}[${i}]`));
}

const ROUTER_KEYS = new Set(['type', 'input_dim', 'weights', 'bias', 'codes', 'expert_for_code', 'info']);

/**
 * Validates router.json ({type, input_dim, weights, bias, codes?, expert_for_code?, info?}) against the
 * pack's experts. expert_for_code lists expert names (or indices); without it, output k is expert k.
 * Every problem is a model_invalid error naming the file and the field.
 */
export function parseRouter(value: unknown, expertNames: readonly string[], source = 'router.json'): RouterWeights {
  if (!isRecord(value)) throw new ServiceError('model_invalid', `${source}: must be a JSON object`);
  const unknown = Object.keys(value).filter((k) => !ROUTER_KEYS.has(k));
  if (unknown.length > 0) throw invalid(source, unknown[0]!, `is not a router field (known: ${[...ROUTER_KEYS].join(', ')})`);
  const type = value['type'];
  if (typeof type !== 'string' || !(ROUTER_TYPES as readonly string[]).includes(type)) {
    throw invalid(source, 'type', `must be one of ${ROUTER_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  }
  const inputDim = value['input_dim'];
  if (typeof inputDim !== 'number' || !Number.isInteger(inputDim) || inputDim <= 0) throw invalid(source, 'input_dim', 'must be a positive integer');
  const weights = matrix(value['weights'], inputDim, source, 'weights');
  const bias = vector(value['bias'], weights.length, source, 'bias');
  let codes: Float32Array[] | undefined;
  if (type === 'codes') {
    codes = matrix(value['codes'], weights.length, source, 'codes');
  } else if (value['codes'] !== undefined) {
    throw invalid(source, 'codes', 'is only for routers of type codes');
  }
  const outputs = codes ? codes.length : weights.length;
  const mapping = value['expert_for_code'] ?? Array.from({ length: outputs }, (_, k) => k);
  if (!Array.isArray(mapping) || mapping.length !== outputs) {
    throw invalid(source, 'expert_for_code', `must list one expert for each of the ${outputs} router outputs`);
  }
  const expertForCode = mapping.map((m, k) => {
    const index = typeof m === 'string' ? expertNames.indexOf(m) : typeof m === 'number' && Number.isInteger(m) && m >= 0 && m < expertNames.length ? m : -1;
    if (index < 0) throw invalid(source, `expert_for_code[${k}]`, `is ${JSON.stringify(m)}, not an expert of the manifest (${expertNames.join(', ')})`);
    return index;
  });
  return { type: type as RouterType, inputDim, weights, bias, codes, expertForCode };
}

/**
 * Prompt routing to pruned experts (APTP, arXiv 2406.12042; REFERENCE §2): pure math, no I/O.
 *
 * A router reads the text encoder's pooled output p [D] and picks an expert:
 *   linear: logits = W p + b (W [K, D]); expert = expert_for_code[argmax logits].
 *   codes:  APTP's form: architecture vector a = W p + b (W [A, D]); expert = expert_for_code[argmax_k cos(a, codes[k])].
 * A per-request budget (fraction of the full UNet's MACs) caps the pick; an override names the expert outright.
 * Everything here is deterministic: fixed summation order, ties go to the lowest index.
 */
import { ServiceError } from '../models/errors.ts';

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

/** What routing needs to know of an expert. */
export interface ExpertCost {
  readonly name: string;
  /** MACs of one UNet call relative to the full UNet (1 for the full model). */
  readonly relativeMacs: number;
}

/** 'auto' follows the router; a number in (0, 1] caps the expert's relative MACs. */
export type Budget = number | 'auto';

function affine(router: RouterWeights, pooled: Float32Array): Float64Array {
  const out = new Float64Array(router.weights.length);
  router.weights.forEach((w, k) => {
    let s = router.bias[k]!;
    for (let j = 0; j < w.length; j++) s += w[j]! * pooled[j]!;
    out[k] = s;
  });
  return out;
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k]! > values[best]!) best = k;
  return best;
}

function cosine(a: Float64Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let j = 0; j < a.length; j++) {
    ab += a[j]! * b[j]!;
    aa += a[j]! * a[j]!;
    bb += b[j]! * b[j]!;
  }
  const d = Math.sqrt(aa * bb);
  return d === 0 ? 0 : ab / d;
}

/** The expert index the router picks for a pooled text embedding [D]. */
export function routeExpert(pooled: Float32Array, router: RouterWeights): number {
  if (pooled.length !== router.inputDim) {
    throw new ServiceError('model_invalid', `router expects a pooled text embedding of ${router.inputDim} values, the text encoder gives ${pooled.length}`);
  }
  const a = affine(router, pooled);
  switch (router.type) {
    case 'linear':
      return router.expertForCode[argmax(a)]!;
    case 'codes':
      return router.expertForCode[argmax(router.codes!.map((c) => cosine(a, c)))]!;
  }
}

/** Checks a budget value from a request: 'auto' or a number in (0, 1]. */
export function parseBudget(value: unknown, field = 'budget'): Budget {
  if (value === undefined || value === 'auto') return 'auto';
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > 1) {
    throw new ServiceError('bad_request', `${field} must be "auto" or a number in (0, 1], got ${JSON.stringify(value)}`, { field });
  }
  return value;
}

/**
 * The expert that serves a prompt.
 *   1. an override names the expert (unknown name: not_found);
 *   2. 'auto': the router's pick (no router: the largest expert);
 *   3. a budget b: the largest expert within b (else the smallest). The budget buys the best expert that fits;
 *      the router only lowers the cost further under 'auto'. (Measured: the shipped router sends 255 of 256
 *      held-out prompts to the smallest expert, 6.4 points below the full model; the largest expert within 0.6
 *      costs 0.59 and loses 2.4 points.)
 * routedIndex is the router's pick (routeExpert), undefined when the pack has no router.
 */
export function chooseExpert<E extends ExpertCost>(experts: readonly E[], routedIndex: number | undefined, budget: Budget, override?: string): E {
  if (experts.length === 0) throw new ServiceError('internal', 'chooseExpert needs at least one expert');
  // 1. override
  if (override !== undefined) {
    const named = experts.find((e) => e.name === override);
    if (!named) throw new ServiceError('not_found', `unknown expert "${override}" (known: ${experts.map((e) => e.name).join(', ')})`, { field: 'expert' });
    return named;
  }
  const routed = routedIndex === undefined ? undefined : experts[routedIndex];
  if (routedIndex !== undefined && !routed) throw new ServiceError('internal', `router picked expert ${routedIndex} of ${experts.length}`);
  // 2. auto
  const cap = parseBudget(budget);
  if (cap === 'auto') return routed ?? largestWithin(experts, 1) ?? largest(experts);
  // 3. budget
  return largestWithin(experts, cap) ?? smallest(experts);
}

function largestWithin<E extends ExpertCost>(experts: readonly E[], cap: number): E | undefined {
  let best: E | undefined;
  for (const e of experts) if (e.relativeMacs <= cap && (!best || e.relativeMacs > best.relativeMacs)) best = e;
  return best;
}

function largest<E extends ExpertCost>(experts: readonly E[]): E {
  return experts.reduce((a, b) => (b.relativeMacs > a.relativeMacs ? b : a));
}

function smallest<E extends ExpertCost>(experts: readonly E[]): E {
  return experts.reduce((a, b) => (b.relativeMacs < a.relativeMacs ? b : a));
}

// ----------------------------------------------------------------------------------------------- parsing

function invalid(source: string, field: string, message: string): ServiceError {
  return new ServiceError('model_invalid', `${source}: ${field} ${message}`, { field });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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

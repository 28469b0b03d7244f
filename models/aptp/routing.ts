/**
 * Prompt routing to pruned experts (APTP, arXiv 2406.12042; REFERENCE §2): pure math, no I/O.
 *
 * A router reads the text encoder's pooled output p [D] and picks an expert:
 *   linear: logits = W p + b (W [K, D]); expert = expert_for_code[argmax logits].
 *   codes:  APTP's form: architecture vector a = W p + b (W [A, D]); expert = expert_for_code[argmax_k cos(a, codes[k])].
 * A per-request budget (fraction of the full UNet's MACs) caps the pick; an override names the expert outright.
 * Everything here is deterministic: fixed summation order, ties go to the lowest index.
 */
import { ServiceError } from '../errors.ts';
import type { RouterWeights } from './router-file.ts';
import { cosineSimilarity } from '../vector.ts';

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
      return router.expertForCode[argmax(router.codes!.map((c) => cosineSimilarity(a, c)))]!;
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
 *      the router only lowers the cost further under 'auto'. (Measured on the shipped pack: 'auto' costs 0.52 of
 *      the MACs for -3.0 points; the largest expert within 0.7 matches the full model; models/train/experts/README.md.)
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

/** What a pack's experts offer for routing (models/aptp/experts.ts ExpertSet). */
export interface RoutableExperts<E extends ExpertCost> {
  readonly experts: readonly E[];
  readonly router: RouterWeights | undefined;
}

/** The expert that serves a prompt: the router's pick (when there is a router and no override) fed to chooseExpert. */
export function pickExpert<E extends ExpertCost>(set: RoutableExperts<E>, pooled: Float32Array, budget: Budget, override?: string): E {
  const routed = set.router && override === undefined ? routeExpert(pooled, set.router) : undefined;
  return chooseExpert(set.experts, routed, budget, override);
}

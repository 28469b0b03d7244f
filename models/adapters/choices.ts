/**
 * What a request may ask of adapters, in one place: the name rule, the limits, the check of a list of
 * (name, weight) choices, and the cache key of a combination. Request parsing (pipelines/params.ts) and the
 * store both use these, so a rule is written once.
 */
import { ServiceError } from '../errors.ts';

/** Adapter names: lower-case letters, digits, '_' and '-' (they become file names: no path can be formed). */
export const ADAPTER_NAME = /^[a-z0-9_-]{1,64}$/;
/** The shared orthogonal basis shipped beside the adapters; not an adapter. */
export const BASIS_FILE_NAME = 'orthogonal-basis';

export interface AdapterLimits {
  /** Largest adapter file, bytes (SD 1.5 LoRAs are 10-150 MB; tiny-shapes ones ~0.5 MB). */
  readonly maxBytes: number;
  /** Most adapters merged at once. */
  readonly maxAdapters: number;
  /** Largest |weight| (lambda); the paper uses 0.6-1. */
  readonly maxWeight: number;
}

export const DEFAULT_ADAPTER_LIMITS: AdapterLimits = Object.freeze({ maxBytes: 256 * 2 ** 20, maxAdapters: 8, maxWeight: 2 });

export interface AdapterChoice {
  readonly name: string;
  readonly weight: number;
}

/** Checks names, weights, count and duplicates of a list of choices (not whether the adapters exist). */
export function checkAdapterChoices(adapters: readonly AdapterChoice[], limits: AdapterLimits = DEFAULT_ADAPTER_LIMITS): void {
  if (adapters.length > limits.maxAdapters) throw new ServiceError('bad_request', `at most ${limits.maxAdapters} adapters at once, got ${adapters.length}`, { field: 'adapters' });
  const seen = new Set<string>();
  adapters.forEach((a, i) => {
    if (typeof a.name !== 'string' || !ADAPTER_NAME.test(a.name) || a.name === BASIS_FILE_NAME) {
      throw new ServiceError('bad_request', `adapter name ${JSON.stringify(a.name)} must be lower-case letters, digits, _ and - (at most 64)`, { field: `adapters.${i}.name` });
    }
    if (seen.has(a.name)) throw new ServiceError('bad_request', `adapter ${a.name} is listed twice`, { field: `adapters.${i}.name` });
    seen.add(a.name);
    if (typeof a.weight !== 'number' || !Number.isFinite(a.weight) || Math.abs(a.weight) > limits.maxWeight) {
      throw new ServiceError('bad_request', `adapter ${a.name}: weight must be a number in [-${limits.maxWeight}, ${limits.maxWeight}], got ${a.weight}`, { field: `adapters.${i}.weight` });
    }
  });
}

/** Cache key: adapters sorted by name, zero weights dropped ("" is the base UNet). */
export function adapterKey(adapters: readonly AdapterChoice[]): string {
  return [...adapters]
    .filter((a) => a.weight !== 0)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((a) => `${a.name}:${a.weight}`)
    .join(',');
}

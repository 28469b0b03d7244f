/** Small helpers for benchmarks: interleaved repetitions, medians and spread. */
export interface Summary {
  readonly mean: number;
  readonly median: number;
  readonly p10: number;
  readonly p90: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  readonly n: number;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))] ?? NaN;
  const mean = s.length > 0 ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { mean, median: at(0.5), p10: at(0.1), p90: at(0.9), p95: at(0.95), p99: at(0.99), max: s[s.length - 1] ?? NaN, n: s.length };
}

/**
 * Runs every case once per round, in a rotating order, for `rounds` rounds after `warmup` untimed rounds,
 * so slow drifts of a shared machine hit all cases alike. Returns per-case samples (ms).
 */
export async function interleave<K extends string>(cases: Record<K, () => Promise<void>>, rounds: number, warmup = 1): Promise<Record<K, Summary>> {
  const names = Object.keys(cases) as K[];
  const samples = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<K, number[]>;
  for (let r = 0; r < warmup + rounds; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]!);
    for (const name of order) {
      const t0 = performance.now();
      await cases[name]();
      if (r >= warmup) samples[name].push(performance.now() - t0);
    }
  }
  return Object.fromEntries(names.map((n) => [n, summarize(samples[n])])) as Record<K, Summary>;
}

export const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
export const ms = (s: Summary) => `${fmt(s.median)} ms (p10 ${fmt(s.p10)}, p90 ${fmt(s.p90)})`;

/**
 * A deterministic stand-in for the UNet for tests of the pipeline math: a fixed nonlinear function of each
 * row's sample, timestep and context, computed row by row (so batching cannot change it).
 */
import type { UnetRow } from '../../models/components.ts';
import type { UnetRunner } from '../../pipelines/denoise-step.ts';

export function fakeEps(row: UnetRow): Float32Array {
  const out = new Float32Array(row.sample.length);
  for (let j = 0; j < out.length; j++) {
    const c = row.context[j % row.context.length]!;
    out[j] = Math.tanh(0.7 * row.sample[j]! + 0.3 * c + row.timestep / 1000 - 0.2 * Math.sin(j));
  }
  return out;
}

/** A runner that records how many rows each call had. */
export function fakeRunner(calls: number[] = []): UnetRunner {
  return async (rows) => {
    calls.push(rows.length);
    return rows.map(fakeEps);
  };
}

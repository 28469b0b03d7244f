/** Admission by capacity (server/admission.ts): the live load measured per worker, and the refusal's arithmetic. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CAPACITY_WINDOW_MS, LiveCapacity } from '../../server/admission.ts';
import type { CallTarget } from '../../models/runtime/dispatcher.ts';

const worker = (): CallTarget => ({ inFlight: 0, alive: true, run: () => Promise.reject(new Error('not run')) });

test('the busiest worker decides: utilisation, ms per cost unit and the units that still fit, keeping the reserve', () => {
  let t = 10_000;
  const cap = new LiveCapacity(0.1, () => t);
  const [a, b] = [worker(), worker()];
  // 30 frames of 2 steps on the full UNet (60 units); worker a busy 1200 ms of the 3 s window, b 300 ms
  for (let i = 0; i < 30; i++) {
    cap.record(a, t - 3000 + i * 100, t - 3000 + i * 100 + 40);
    cap.record(a, t - 3000 + i * 100 + 10, t - 3000 + i * 100 + 30); // sent while the one before ran: no more busy time
    cap.record(b, t - 3000 + i * 100, t - 3000 + i * 100 + 10);
    cap.frameServed(2, 1);
  }
  const s = cap.snapshot();
  assert.equal(s.live_utilisation, 1200 / CAPACITY_WINDOW_MS);
  assert.equal(s.ms_per_unit, 20);
  // 1 - 0.1 reserve - 0.4 used = 0.5 of a second = 500 ms free / 20 ms per unit
  assert.equal(s.free_units_per_second, 25);
  cap.admit(12, 2); // 24 units/s fit
  cap.admit(undefined, 100); // no target: admitted
  assert.throws(() => cap.admit(13, 2), (e: Error & { code?: string }) => e.code === 'unavailable' && /cannot serve 13 fps even fully degraded: live streams use 40% of the busiest worker, this stream would need 52% more \(10% is kept/.test(e.message));
  assert.doesNotThrow(() => cap.admit(25, 1), 'a cheaper bottom rung (1 step) fits twice the frames');
  // the window slides: with the load gone nothing is measured and a stream is admitted
  t += CAPACITY_WINDOW_MS + 1;
  assert.deepEqual(cap.snapshot(), { live_utilisation: 0, ms_per_unit: null, free_units_per_second: null, reserved: 0.1 });
  cap.admit(120, 8);
});

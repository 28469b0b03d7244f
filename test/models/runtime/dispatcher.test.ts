/** The queue model calls wait in (models/runtime/dispatcher.ts), with workers we control. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CALLS_PER_WORKER, Dispatcher, type CallTarget } from '../../../models/runtime/dispatcher.ts';
import type { Outputs } from '../../../models/runtime/contract.ts';

/** A worker whose calls finish when the test says. */
class FakeWorker implements CallTarget {
  inFlight = 0;
  alive = true;
  readonly calls: { label: string; finish: () => void }[] = [];
  constructor(readonly name: string) {}
  run(_session: number, feeds: Record<string, { data: unknown }>): Promise<Outputs> {
    this.inFlight++;
    return new Promise((resolve) => {
      this.calls.push({
        label: String((feeds['x']?.data as Float32Array | undefined)?.[0]),
        finish: () => {
          this.inFlight--;
          resolve({});
        },
      });
    });
  }
}

const call = (replicas: FakeWorker[], n: number) => ({ label: `call ${n}`, replicas: replicas.map((worker) => ({ worker, session: 1 })), feeds: { x: { data: Float32Array.of(n), dims: [1] } }, rgb8Output: undefined });
const tick = () => new Promise((r) => setImmediate(r));

test(`calls wait in one queue, first come first served, at most ${CALLS_PER_WORKER} on a worker at once`, async () => {
  const a = new FakeWorker('a');
  const d = new Dispatcher();
  const done: number[] = [];
  for (let n = 0; n < 5; n++) void d.submit(call([a], n)).then(() => done.push(n));
  assert.deepEqual(a.calls.map((c) => c.label), ['0', '1']);
  assert.equal(d.waiting, 3);
  a.calls[0]!.finish();
  await tick();
  assert.deepEqual(a.calls.map((c) => c.label), ['0', '1', '2'], 'the oldest waiting call goes next');
  for (const c of a.calls.slice(1)) c.finish();
  await tick();
  for (const c of a.calls.slice(3)) c.finish();
  await tick();
  assert.deepEqual(done, [0, 1, 2, 3, 4]);
  assert.equal(d.waiting, 0);
});

test('a model on two workers: each call goes to the least busy when it leaves the queue; a call for a full worker does not hold up others', async () => {
  const [a, b, c] = [new FakeWorker('a'), new FakeWorker('b'), new FakeWorker('c')];
  const d = new Dispatcher();
  for (let n = 0; n < 4; n++) void d.submit(call([a, b], n));
  assert.deepEqual([a.calls.length, b.calls.length], [2, 2], 'spread over both');
  void d.submit(call([a, b], 4)); // both full: waits
  void d.submit(call([c], 5)); // behind it, but for another worker: goes at once
  assert.deepEqual(c.calls.map((x) => x.label), ['5']);
  b.calls[0]!.finish();
  await tick();
  assert.deepEqual(b.calls.map((x) => x.label), ['1', '3', '4'], 'bound to the worker that freed first');
});

test('a call whose workers have all stopped fails as unavailable', async () => {
  const a = new FakeWorker('a');
  a.alive = false;
  await assert.rejects(new Dispatcher().submit(call([a], 0)), /its worker thread has stopped/);
});

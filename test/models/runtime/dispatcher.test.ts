/** The queue model calls wait in (models/runtime/dispatcher.ts), with workers we control. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { CALLS_PER_WORKER, Dispatcher, IDLE_GAP_FRACTION, type CallTarget } from '../../../models/runtime/dispatcher.ts';
import type { Outputs } from '../../../models/runtime/contract.ts';
import { LIVE_ACTIVE_MS, withUrgency } from '../../../models/runtime/urgency.ts';

/** A worker whose calls finish when the test says. */
class FakeWorker implements CallTarget {
  inFlight = 0;
  alive = true;
  readonly calls: { label: string; finished: boolean; finish: () => void }[] = [];
  constructor(readonly name: string) {}
  run(_session: number, feeds: Record<string, { data: unknown }>): Promise<Outputs> {
    this.inFlight++;
    return new Promise((resolve) => {
      const entry = {
        label: String((feeds['x']?.data as Float32Array | undefined)?.[0]),
        finished: false,
        finish: () => {
          entry.finished = true;
          this.inFlight--;
          resolve({});
        },
      };
      this.calls.push(entry);
    });
  }
}

const call = (replicas: FakeWorker[], n: number) => ({ label: `call ${n}`, replicas: replicas.map((worker) => ({ worker, session: 1 })), feeds: { x: { data: Float32Array.of(n), dims: [1] } }, rgb8Output: undefined });
// two turns: a freed worker is handed out on the turn after its call ends while live work is on
const tick = () => new Promise((r) => setImmediate(() => setImmediate(r)));

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

// --- urgency (models/runtime/urgency.ts): classes, deadlines, the minimum share, the live slot rule

/** A clock the test moves. */
function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

const labelled = (w: FakeWorker, n: number) => call([w], n);

test('the most urgent call goes first: live before interactive before background, earliest deadline first within live, arrival order within a class', async () => {
  const time = clock();
  const d = new Dispatcher({ minShare: 0, now: time.now });
  const a = new FakeWorker('a');
  // two interactive calls fill the worker; everything after waits in the queue
  void d.submit(labelled(a, 0));
  void d.submit(labelled(a, 1));
  withUrgency({ class: 'background' }, () => void d.submit(labelled(a, 10)));
  void d.submit(labelled(a, 20));
  withUrgency({ class: 'live', deadline: 1050 }, () => void d.submit(labelled(a, 30)));
  withUrgency({ class: 'live', deadline: 1020 }, () => void d.submit(labelled(a, 31)));
  withUrgency({ class: 'background' }, () => void d.submit(labelled(a, 11)));
  withUrgency({ class: 'interactive' }, () => void d.submit(labelled(a, 21)));
  assert.equal(d.waiting, 6);
  for (let i = 0; i < 8; i++) {
    a.calls[i]!.finish();
    await tick();
    time.advance(10); // past the idle gap the lower classes wait for while live work is on
    await sleep(15);
  }
  assert.deepEqual(
    a.calls.map((c) => c.label),
    ['0', '1', '31', '30', '20', '21', '10', '11'],
  );
});

test('the urgency of a call is that of the async flow that made it, across awaits', async () => {
  const d = new Dispatcher({ minShare: 0 });
  const a = new FakeWorker('a');
  const seen: string[] = [];
  d.observe({ onStart: (e) => seen.push(`${e.label}:${e.class}`) });
  await withUrgency({ class: 'background' }, async () => {
    await tick();
    void d.submit(labelled(a, 1));
  });
  void d.submit(labelled(a, 2)); // outside any flow: interactive
  assert.deepEqual(seen, ['call 1:background', 'call 2:interactive']);
});

test('while live calls are recent, a call below live takes only a worker idle for a quarter of the live interval (not the second slot, not a short gap); later it takes both', async () => {
  const time = clock();
  const d = new Dispatcher({ minShare: 0, now: time.now });
  const a = new FakeWorker('a');
  withUrgency({ class: 'live', deadline: 1100 }, () => void d.submit(labelled(a, 1)));
  withUrgency({ class: 'background' }, () => void d.submit(labelled(a, 2)));
  assert.deepEqual(a.calls.map((c) => c.label), ['1'], 'the background call does not queue on the busy worker');
  withUrgency({ class: 'live', deadline: 1100 }, () => void d.submit(labelled(a, 3)));
  assert.deepEqual(a.calls.map((c) => c.label), ['1', '3'], 'a live call takes the second slot');
  a.calls[0]!.finish();
  a.calls[1]!.finish();
  await tick();
  assert.deepEqual(a.calls.map((c) => c.label), ['1', '3'], 'a worker idle for a moment is not yet spare');
  time.advance(IDLE_GAP_FRACTION * (1000 / 30) + 0.1); // live calls that state no interval count as 30 fps
  await sleep(20);
  assert.deepEqual(a.calls.map((c) => c.label), ['1', '3', '2'], 'the background call goes once the worker has been idle for the gap');
  a.calls[2]!.finish();
  time.advance(LIVE_ACTIVE_MS + 1); // no live call for a while
  withUrgency({ class: 'background' }, () => {
    void d.submit(labelled(a, 4));
    void d.submit(labelled(a, 5));
  });
  assert.deepEqual(a.calls.map((c) => c.label).slice(3), ['4', '5'], 'with no live work both slots are used');
});

test('a class below live that got less than its minimum share of worker time goes first; then live again', async () => {
  const time = clock();
  const d = new Dispatcher({ minShare: 0.25, now: time.now });
  const a = new FakeWorker('a');
  const order: string[] = [];
  d.observe({ onStart: (e) => order.push(e.label) });
  // a live backlog and a background backlog; each call takes 10 ms of the fake clock
  for (let n = 0; n < 8; n++) withUrgency({ class: 'live', deadline: 5000 + n }, () => void d.submit(labelled(a, n)));
  for (let n = 100; n < 103; n++) withUrgency({ class: 'background' }, () => void d.submit(labelled(a, n)));
  for (let i = 0; i < 11; i++) {
    const running = a.calls.filter((c) => !c.finished);
    time.advance(10);
    running[0]!.finish();
    await tick();
  }
  // Worked by hand from the rule (share = background ms / all ms of the window, running calls counted to now):
  // t=1000 live 0 and 1 start (nothing measured: no share is owed). t=1010 live 0 ends: background has 0 of 20 ms,
  // under 25%: call 100 takes the freed slot. t=1020: 10 of 40 = 25%, not under: live 2. t=1030: 20 of 60: live 3.
  // t=1040: 20 of 80 = 25%: live 4. t=1050: 20 of 100 = 20%: call 101. t=1060: 30 of 120 = 25%: live 5.
  // t=1070: 40 of 140: live 6. t=1080: 40 of 160 = 25%: live 7. t=1090: 40 of 180 = 22%: call 102.
  assert.deepEqual(order, ['call 0', 'call 1', 'call 100', 'call 2', 'call 3', 'call 4', 'call 101', 'call 5', 'call 6', 'call 7', 'call 102']);
});

test('while streams are live, a lower-class call whose model runs longer than half the live interval waits for its share; a short one takes the spare worker', async () => {
  const time = clock();
  const d = new Dispatcher({ minShare: 0, now: time.now });
  const a = new FakeWorker('a');
  const named = (label: string, n: number) => ({ ...call([a], n), label });
  // measured with no live work: the "decoder" takes 30 ms a call, the "unet" 5 ms
  void d.submit(named('decoder', 1));
  time.advance(30);
  a.calls[0]!.finish();
  await tick();
  void d.submit(named('unet', 2));
  time.advance(5);
  a.calls[1]!.finish();
  await tick();
  // a live stream at 30 fps: half its interval is 16.7 ms
  withUrgency({ class: 'live', deadline: 2000, interval: 1000 / 30 }, () => void d.submit(labelled(a, 3)));
  a.calls[2]!.finish();
  await tick();
  withUrgency({ class: 'background' }, () => {
    void d.submit(named('decoder', 4));
    void d.submit(named('unet', 5));
  });
  time.advance(20); // idle well past the gap
  await sleep(20);
  assert.deepEqual(a.calls.map((c) => c.label).slice(3), ['5'], 'the short call goes, the long one waits');
  a.calls[3]!.finish();
  time.advance(LIVE_ACTIVE_MS + 1); // live work over: the long call goes
  await sleep(20);
  assert.deepEqual(a.calls.map((c) => c.label).slice(3), ['5', '4']);
});

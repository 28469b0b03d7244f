/** The gateway's bookkeeping of frames sent to a worker: input numbers back to client ids, drops, frames in flight. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SentFrames } from '../../../server/cluster/sent-frames.ts';

test('maps the worker\'s input numbers to client ids, through repeats of a primed frame', () => {
  const sent = new SentFrames();
  for (const id of [7, 8, 9]) sent.push(id); // the worker numbers them 1, 2, 3
  assert.equal(sent.clientId(1), 7);
  assert.equal(sent.show(7), 0);
  assert.equal(sent.show(7), 0); // a primed stream repeats its first frame
  assert.equal(sent.clientId(1), 7, 'the last shown frame stays known');
  assert.equal(sent.clientId(3), 9);
  assert.deepEqual(sent.inFlight(), [8, 9]);
});

test('frames passed over by a later output were dropped by the worker; the rest are in flight', () => {
  const sent = new SentFrames();
  for (let id = 1; id <= 6; id++) sent.push(id);
  assert.equal(sent.show(1), 0);
  assert.equal(sent.show(4), 2, 'frames 2 and 3 were replaced before the worker took them');
  assert.equal(sent.clientId(2), null, 'forgotten once passed');
  assert.equal(sent.clientId(4), 4);
  assert.equal(sent.clientId(6), 6);
  assert.deepEqual(sent.inFlight(), [5, 6]);
  assert.equal(sent.show(6), 1);
  assert.deepEqual(sent.inFlight(), []);
});

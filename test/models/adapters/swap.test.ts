import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UnetSwap } from '../../../models/adapters/swap.ts';
import type { Unet } from '../../../models/components.ts';

const fake = (label: string) => ({ label }) as unknown as Unet;
const tick = () => new Promise((resolve) => setImmediate(resolve));

test('frames keep the current UNet until the build is done, then swap at the next frame boundary', async () => {
  const base = fake('base');
  const merged = fake('merged');
  const swaps: string[][] = [];
  const swap = new UnetSwap(base, undefined, (w) => swaps.push(w));
  let finish!: (m: { unet: Unet; warnings: string[] }) => void;
  swap.request(new Promise((resolve) => (finish = resolve)));
  assert.equal(swap.atFrameBoundary(), base);
  assert.equal(swap.pending, true);
  finish({ unet: merged, warnings: ['w'] });
  await tick();
  assert.equal(swap.unet, base, 'no swap in the middle of a frame');
  assert.equal(swap.atFrameBoundary(), merged);
  assert.deepEqual(swaps, [['w']]);
  assert.equal(swap.pending, false);
});

test('the latest request wins; a failed build keeps the current UNet and is reported', async () => {
  const errors: unknown[] = [];
  const swap = new UnetSwap(fake('base'), (e) => errors.push(e));
  let slow!: (m: { unet: Unet; warnings: string[] }) => void;
  swap.request(new Promise((resolve) => (slow = resolve)));
  const latest = fake('latest');
  swap.request(Promise.resolve({ unet: latest, warnings: [] }));
  await tick();
  slow({ unet: fake('stale'), warnings: [] });
  await tick();
  assert.equal(swap.atFrameBoundary(), latest);
  swap.request(Promise.reject(new Error('bad adapter')));
  await tick();
  assert.equal(swap.atFrameBoundary(), latest);
  assert.equal((errors[0] as Error).message, 'bad adapter');
});

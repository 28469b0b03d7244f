/**
 * Which UNet serves a request (pipelines/variants.ts): the pack's own, an APTP expert within the budget or by
 * name, or the full UNet with adapters merged; the batching key says which rows may share a call.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VariantResolver, type AdapterSource, type ExpertSource } from '../../pipelines/variants.ts';
import { parseParams } from '../../pipelines/params.ts';
import type { Unet } from '../../models/components.ts';

const unet = (name: string) => ({ name }) as unknown as Unet;
const base = unet('base');
const experts: ExpertSource = {
  experts: [
    { name: 'full', relativeMacs: 1, unet: base },
    { name: 'e70', relativeMacs: 0.7, unet: unet('e70') },
    { name: 'e44', relativeMacs: 0.44, unet: unet('e44') },
  ],
  router: undefined,
};
const merges: string[][] = [];
const adapters: AdapterSource = {
  merged: async (list) => {
    merges.push(list.map((a) => `${a.name}:${a.weight}`));
    return { unet: unet('merged'), warnings: ['w'] };
  },
};
let pooledCalls = 0;
const pooled = async () => {
  pooledCalls++;
  return new Float32Array(4);
};

test('without experts or adapters the pack UNet serves everything; another expert name is not_found', async () => {
  const r = new VariantResolver(base, undefined, undefined);
  const v = await r.resolve(parseParams({}), pooled);
  assert.deepEqual([v.key, v.unet, v.expert, v.relativeMacs], ['full', base, 'full', 1]);
  await assert.rejects(r.resolve(parseParams({ expert: 'e70' }), pooled), /no expert "e70"/);
  await assert.rejects(r.resolve(parseParams({ adapters: [{ name: 'heart', weight: 1 }] }), pooled), /has no adapters/);
});

test('a budget buys the largest expert within it; a name forces one; keys batch by expert', async () => {
  const r = new VariantResolver(base, experts, adapters);
  assert.equal((await r.resolve(parseParams({ budget: 1 }), pooled)).key, 'full');
  assert.equal((await r.resolve(parseParams({ budget: 0.8 }), pooled)).key, 'e70');
  assert.equal((await r.resolve(parseParams({ budget: 0.5 }), pooled)).key, 'e44');
  assert.equal((await r.resolve(parseParams({ budget: 0.1 }), pooled)).key, 'e44', 'below every expert: the smallest');
  assert.equal((await r.resolve(parseParams({ expert: 'e70', budget: 0.1 }), pooled)).key, 'e70');
  await assert.rejects(r.resolve(parseParams({ expert: 'nope' }), pooled), /unknown expert "nope"/);
});

test('adapters always run on the full UNet, whatever the budget; zero weights drop out; the prompt is not routed', async () => {
  const r = new VariantResolver(base, experts, adapters);
  pooledCalls = 0;
  const v = await r.resolve(parseParams({ budget: 0.5, adapters: [{ name: 'ring', weight: 0.5 }, { name: 'heart', weight: 0 }, { name: 'diamond', weight: 1 }] }), pooled);
  assert.equal(v.expert, 'full');
  assert.equal(v.relativeMacs, 1);
  assert.equal(v.key, 'full+diamond:1,ring:0.5');
  assert.deepEqual(merges.at(-1), ['ring:0.5', 'diamond:1']);
  assert.deepEqual(v.warnings, ['adapters merge into the full UNet only: budget 0.5 not applied', 'w'], 'the unused budget is said');
  assert.equal(pooledCalls, 0);
  assert.deepEqual((await r.resolve(parseParams({ adapters: [{ name: 'ring', weight: 1 }] }), pooled)).warnings, ['w'], 'no budget asked: nothing to say');
  // all-zero weights: no adapters at all
  assert.equal((await r.resolve(parseParams({ adapters: [{ name: 'ring', weight: 0 }] }), pooled)).key, 'full');
});

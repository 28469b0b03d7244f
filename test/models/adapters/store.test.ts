import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdapterStore } from '../../../models/adapters/store.ts';
import { adapterKey } from '../../../models/adapters/choices.ts';
import { Unet } from '../../../models/components.ts';
import { OnnxModel } from '../../../models/runtime/onnx.ts';
import { Generator } from '../../../pipelines/random.ts';
import { ServiceError } from '../../../models/errors.ts';
import { DEFAULT_PACK_OPTIONS } from '../../../models/pack.ts';
import { ModelSessions } from '../../../models/sessions.ts';
import { BASE_PACK, FIXTURES } from '../../helpers/fixtures.ts';

const ADAPTERS = join(FIXTURES, 'adapters');
const UNET = join(BASE_PACK, 'unet', 'model.onnx');
const SESSIONS = new ModelSessions({ ...DEFAULT_PACK_OPTIONS, threads: 1 });

async function storeWith(names: string[], cacheSize = 4, evictedIdleMs?: number): Promise<{ store: AdapterStore; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  for (const n of names) await copyFile(join(ADAPTERS, `${n}.safetensors`), join(dir, `${n}.safetensors`));
  return { store: new AdapterStore(dir, { unet: UNET }, SESSIONS, cacheSize, {}, evictedIdleMs), dir };
}

const code = (c: string, pattern?: RegExp) => (e: unknown) => e instanceof ServiceError && e.code === c && (!pattern || pattern.test(e.message));

test('cache keys are sorted by name and drop zero weights', () => {
  assert.equal(adapterKey([{ name: 'b', weight: 0.5 }, { name: 'a', weight: 1 }, { name: 'c', weight: 0 }]), 'a:1,b:0.5');
  assert.equal(adapterKey([]), '');
});

test('list() reads names, rank, layers and metadata; skips the basis file and broken files', async () => {
  const { store, dir } = await storeWith(['fixture-a', 'fixture-c']);
  await copyFile(join(ADAPTERS, 'fixture-b.safetensors'), join(dir, 'orthogonal-basis.safetensors'));
  await copyFile(join(ADAPTERS, 'unet-lora-branch.onnx'), join(dir, 'broken.safetensors'));
  const list = await store.list();
  assert.deepEqual(list.map((a) => a.name), ['fixture-a', 'fixture-c']);
  assert.equal(list[0]!.rank, 2);
  assert.equal(list[0]!.layers, 50);
  assert.equal(list[0]!.method, 'orthogonal');
  assert.equal(list[1]!.method, 'lora');
  assert.equal((await new AdapterStore(join(dir, 'missing'), { unet: UNET }, SESSIONS).list()).length, 0);
});

test('add() validates the name, size, format and fit before writing anything', async () => {
  const { store, dir } = await storeWith([]);
  const good = new Uint8Array(await readFile(join(ADAPTERS, 'fixture-b.safetensors')));
  for (const name of ['../evil', 'a/b', 'UPPER', '', 'x'.repeat(65), 'orthogonal-basis', 'dot.name']) {
    await assert.rejects(store.add(name, good), code('bad_request', /adapter name must match/), name);
  }
  await assert.rejects(new AdapterStore(dir, { unet: UNET }, SESSIONS, 4, { maxBytes: 1000 }).add('big', good), code('too_large', /limit is 1000/));
  await assert.rejects(store.add('trunc', good.subarray(0, good.length - 10)), code('model_invalid', /adapter trunc: not a valid safetensors file/));
  await assert.rejects(store.add('junk', new TextEncoder().encode('hello world, not safetensors')), code('model_invalid'));
  const onnx = new Uint8Array(await readFile(join(ADAPTERS, 'unet-lora-branch.onnx')));
  await assert.rejects(store.add('onnx', onnx), code('model_invalid'));
  assert.deepEqual(await readdir(dir), [], 'nothing written by refused uploads');
  const info = await store.add('mine', good);
  assert.equal(info.name, 'mine');
  assert.equal(info.layers, 50);
  assert.deepEqual(await readdir(dir), ['mine.safetensors']);
  await assert.rejects(store.add('mine', good), code('conflict', /already exists/));
  assert.deepEqual((await store.list()).map((a) => a.name), ['mine']);
});

test('merged(): validation, one build per key for concurrent requests, LRU eviction, warnings', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b', 'fixture-c'], 2);
  await assert.rejects(store.merged([{ name: 'nope', weight: 1 }]), code('not_found', /no adapter named nope/));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: Number.NaN }]), code('bad_request', /weight must be a number/));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: 9 }]), code('bad_request'));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-a', weight: 1 }]), code('bad_request', /listed twice/));
  await assert.rejects(store.merged([{ name: '../x', weight: 1 }]), code('bad_request'));
  const p1 = store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]);
  const p2 = store.merged([{ name: 'fixture-b', weight: 0.5 }, { name: 'fixture-a', weight: 1 }]);
  assert.equal(p1, p2, 'same key, same build');
  const ab = await p1;
  assert.deepEqual(ab.warnings, []);
  assert.ok(ab.unet.model.label.startsWith('unet+'));
  const abc = await store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-c', weight: 1 }]);
  assert.equal(abc.warnings.length, 1);
  assert.match(abc.warnings[0]!, /fixture-a and fixture-c overlap/);
  const base = await store.merged([]);
  assert.equal(base.unet.model.label, 'unet');
  assert.equal(store.ready([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]), undefined, 'evicted (cache size 2)');
  assert.ok(store.ready([]));
});

test('a merged UNet from the store (built and run on a worker of its own) predicts like the explicit LoRA-branch reference; evicted, it is released once idle', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b'], 1, 50);
  const { unet } = await store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]);
  const reference = new Unet(await OnnxModel.load(join(ADAPTERS, 'unet-lora-branch.onnx'), { provider: 'cpu', threads: 1, label: 'reference' }));
  const g = new Generator(3);
  const rows = [999, 499, 99].map((timestep) => ({ sample: Float32Array.from({ length: 4 * 8 * 8 }, () => g.normal()), timestep, context: Float32Array.from({ length: 77 * 8 }, () => g.normal()) }));
  const [got, want] = await Promise.all([unet.predict(rows, 8, 8), reference.predict(rows, 8, 8)]);
  const error = got.reduce((m, eps, i) => eps.reduce((s, v, j) => Math.max(s, Math.abs(v - want[i]![j]!)), m), 0);
  assert.ok(error < 1e-4, `max error ${error}`);
  const next = store.merged([{ name: 'fixture-a', weight: 1 }]); // evicts the first (cache size 1)
  assert.equal((await unet.predict(rows, 8, 8)).length, 3, 'still usable right after');
  await next;
  await new Promise((resolve) => setTimeout(resolve, 300));
  await assert.rejects(unet.predict(rows, 8, 8), code('unavailable'));
});

test('merged variants are bounded by the bytes of weights they hold, not only by count (the newest always stays)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  for (const n of ['fixture-a', 'fixture-b']) await copyFile(join(ADAPTERS, `${n}.safetensors`), join(dir, `${n}.safetensors`));
  const unetBytes = (await readFile(UNET)).length;
  // room for two merged UNets' weights, with a count limit that would allow four
  const store = new AdapterStore(dir, { unet: UNET }, SESSIONS, 4, {}, undefined, 2.5 * unetBytes);
  const a = await store.merged([{ name: 'fixture-a', weight: 1 }]);
  assert.equal(a.weightBytes, unetBytes, 'a merged UNet holds the UNet\'s weights once');
  await store.merged([{ name: 'fixture-b', weight: 1 }]);
  assert.equal(store.mergedBytes, 2 * unetBytes);
  assert.ok(store.ready([{ name: 'fixture-a', weight: 1 }]), 'two fit');
  await store.merged([{ name: 'fixture-a', weight: 0.5 }]);
  assert.equal(store.ready([{ name: 'fixture-a', weight: 1 }]), undefined, 'the least recently used is evicted by bytes');
  assert.ok(store.ready([{ name: 'fixture-b', weight: 1 }]) && store.ready([{ name: 'fixture-a', weight: 0.5 }]));
  assert.ok(store.mergedBytes <= 2.5 * unetBytes);
  const tiny = new AdapterStore(dir, { unet: UNET }, SESSIONS, 4, {}, undefined, 1);
  await tiny.merged([{ name: 'fixture-a', weight: 1 }]);
  await tiny.merged([{ name: 'fixture-b', weight: 1 }]);
  assert.ok(tiny.ready([{ name: 'fixture-b', weight: 1 }]), 'a budget smaller than one variant still keeps the newest');
  assert.equal(tiny.ready([{ name: 'fixture-a', weight: 1 }]), undefined);
});

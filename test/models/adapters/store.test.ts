import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
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
import { scaledAdapter } from '../../helpers/adapters.ts';
import { checkProbe } from '../../../models/adapters/probe.ts';

const ADAPTERS = join(FIXTURES, 'adapters');
const UNET = join(BASE_PACK, 'unet', 'model.onnx');
const OPTIONS = { ...DEFAULT_PACK_OPTIONS, threads: 1 };
const SESSIONS = new ModelSessions(OPTIONS);

/** A store over a folder with copies of these fixture adapters (read-only "pack" adapters) and an upload folder. */
async function storeWith(names: string[], maxVariants = 4): Promise<{ store: AdapterStore; dir: string; uploads: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  const uploads = join(dir, 'uploads');
  for (const n of names) await copyFile(join(ADAPTERS, `${n}.safetensors`), join(dir, `${n}.safetensors`));
  return { store: new AdapterStore(dir, { unet: UNET }, SESSIONS, { maxVariants, uploadDir: uploads }), dir, uploads };
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
  const { store, uploads: dir } = await storeWith([]);
  await mkdir(dir, { recursive: true });
  const good = new Uint8Array(await readFile(join(ADAPTERS, 'fixture-b.safetensors')));
  for (const name of ['../evil', 'a/b', 'UPPER', '', 'x'.repeat(65), 'orthogonal-basis', 'dot.name']) {
    await assert.rejects(store.add(name, good), code('bad_request', /adapter name must match/), name);
  }
  await assert.rejects(new AdapterStore(dir, { unet: UNET }, SESSIONS, { limits: { maxBytes: 1000 }, uploadDir: dir }).add('big', good), code('too_large', /limit is 1000/));
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
  assert.deepEqual((await store.list()).map((a) => [a.name, a.source]), [['mine', 'upload']]);
});

test('merged(): validation, one build per key for concurrent requests, warnings, LRU eviction of released variants', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b', 'fixture-c'], 2);
  await assert.rejects(store.merged([{ name: 'nope', weight: 1 }]), code('not_found', /no adapter named nope/));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: Number.NaN }]), code('bad_request', /weight must be a number/));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: 9 }]), code('bad_request'));
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-a', weight: 1 }]), code('bad_request', /listed twice/));
  await assert.rejects(store.merged([{ name: '../x', weight: 1 }]), code('bad_request'));
  const p1 = store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]);
  const p2 = store.merged([{ name: 'fixture-b', weight: 0.5 }, { name: 'fixture-a', weight: 1 }]);
  const [ab, ab2] = await Promise.all([p1, p2]);
  assert.equal(ab.unet, ab2.unet, 'same key, same build');
  assert.equal(store.stats.variants, 1);
  assert.deepEqual(ab.warnings, []);
  assert.ok(ab.unet.model.label.startsWith('unet+'));
  ab.release();
  ab2.release();
  const abc = await store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-c', weight: 1 }]);
  assert.equal(abc.warnings.length, 1);
  assert.match(abc.warnings[0]!, /fixture-a and fixture-c overlap/);
  abc.release();
  const base = await store.merged([]);
  assert.equal(base.unet.model.label, 'unet');
  base.release();
  assert.equal(store.ready([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]), undefined, 'evicted (2 variants at most)');
  assert.ok(store.ready([]));
  assert.equal(store.stats.variants, 2);
  await assert.rejects(ab.unet.predict([], 8, 8).then(() => ab.unet.predict(probeRows(), 8, 8)), code('unavailable'), 'the evicted session has ended');
});

function probeRows() {
  const g = new Generator(5);
  return [{ sample: Float32Array.from({ length: 4 * 8 * 8 }, () => g.normal()), timestep: 499, context: Float32Array.from({ length: 77 * 8 }, () => g.normal()) }];
}

test('merged variants are bounded: all in use -> rate_limited with Retry-After; a released one is evicted and its thread ends', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b'], 2);
  const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
  const a1 = await store.merged([{ name: 'fixture-a', weight: 0.31 }]);
  const a2 = await store.merged([{ name: 'fixture-a', weight: 0.32 }]);
  await new Promise((r) => setTimeout(r, 300)); // the spare worker for the next build has started
  const withTwo = threads();
  const refused = await store.merged([{ name: 'fixture-a', weight: 0.33 }]).then(() => undefined, (e: unknown) => e);
  assert.ok(refused instanceof ServiceError && refused.code === 'rate_limited', String(refused));
  assert.ok(refused.retryAfter! > 0);
  assert.match(refused.message, /all 2 merged adapter variants are in use \(fixture-a:0\.31; fixture-a:0\.32\)/);
  a1.release();
  for (let i = 34; i < 44; i++) (await store.merged([{ name: 'fixture-a', weight: i / 100 }])).release();
  assert.equal(store.stats.variants, 2, 'never more than 2 alive');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(threads() <= withTwo, `threads ${threads()} after 10 more variants, ${withTwo} with 2`);
  await assert.rejects(a1.unet.predict(probeRows(), 8, 8), code('unavailable'), 'the evicted variant ended');
  assert.equal((await a2.unet.predict(probeRows(), 8, 8)).length, 1, 'the one in use was kept');
  a2.release();
  await store.close();
});

test('one adapter at other weights shares its update: no new up @ down products, same weights as a fresh merge', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b'], 4);
  (await store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 1 }])).release();
  assert.equal(store.stats.deltasComputed, 2);
  const half = await store.merged([{ name: 'fixture-a', weight: 0.5 }, { name: 'fixture-b', weight: -0.25 }]);
  assert.equal(store.stats.deltasComputed, 2, 'the updates were reused');
  const { store: fresh } = await storeWith(['fixture-a', 'fixture-b'], 4);
  const again = await fresh.merged([{ name: 'fixture-a', weight: 0.5 }, { name: 'fixture-b', weight: -0.25 }]);
  const [x, y] = await Promise.all([half.unet.predict(probeRows(), 8, 8), again.unet.predict(probeRows(), 8, 8)]);
  assert.deepEqual(x, y);
  half.release();
  again.release();
  await Promise.all([store.close(), fresh.close()]);
});

test('uploads: concurrent uploads of one name -> one 201, the rest conflict; replace; pack adapters are read-only and listed beside', async () => {
  const { store, dir, uploads } = await storeWith(['fixture-a']);
  const good = new Uint8Array(await readFile(join(ADAPTERS, 'fixture-b.safetensors')));
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => store.add('same', good)));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results.filter((r) => r.status === 'rejected')) assert.ok(code('conflict')((r as PromiseRejectedResult).reason));
  assert.deepEqual(await readdir(uploads), ['same.safetensors'], 'no temporary files left');
  await assert.rejects(store.add('fixture-a', good), code('conflict', /belongs to the model pack/));
  await assert.rejects(store.add('fixture-a', good, { replace: true }), code('conflict', /belongs to the model pack/));
  const other = new Uint8Array(await readFile(join(ADAPTERS, 'fixture-c.safetensors')));
  const before = await store.merged([{ name: 'same', weight: 1 }]);
  before.release();
  assert.equal((await store.add('same', other, { replace: true })).method, 'lora');
  assert.equal(store.ready([{ name: 'same', weight: 1 }]), undefined, 'variants of the old file are forgotten');
  assert.deepEqual((await store.list()).map((a) => [a.name, a.source]), [['fixture-a', 'pack'], ['same', 'upload']]);
  assert.deepEqual((await readdir(dir)).sort(), ['fixture-a.safetensors', 'uploads'], 'the pack folder is not written');
  await store.close();
});

test('uploads: an update over the norm bound (up x 1e37, finite) is refused, naming the layer and the bound', async () => {
  const { store, uploads } = await storeWith([]);
  const poisoned = await scaledAdapter(join(ADAPTERS, 'fixture-a.safetensors'), 1e37);
  await assert.rejects(store.add('poison', poisoned), code('model_invalid', /lora_unet_\w+ changes its layer by \|dW\| = .* over the bound/));
  assert.deepEqual(await readdir(uploads).catch(() => []), [], 'nothing stored');
  (await store.add('strong', await scaledAdapter(join(ADAPTERS, 'fixture-a.safetensors'), 4))).name; // within the bound
  await store.close();
});

test('an adapter file put in the folder by hand is held to the update bound when it is merged', async () => {
  const { store, dir } = await storeWith(['fixture-a']);
  await writeFile(join(dir, 'poison.safetensors'), await scaledAdapter(join(ADAPTERS, 'fixture-a.safetensors'), 1e37));
  await assert.rejects(store.merged([{ name: 'poison', weight: 1 }]), code('model_invalid', /adapter poison: lora_unet_\w+ changes its layer by/));
  assert.equal(store.stats.variants, 0);
  await store.close();
});

test('probe: a prediction that is not finite, collapsed, blown up or no longer agrees with the base is refused', () => {
  const g = new Generator(9);
  const base = Float32Array.from({ length: 256 }, () => g.normal());
  const near = base.map((v) => v * 1.1 + 0.05 * g.normal());
  assert.doesNotThrow(() => checkProbe(near, base, 'adapters x:1'));
  const refused = (merged: Float32Array, pattern: RegExp) => assert.throws(() => checkProbe(merged, base, 'adapters x:1'), code('model_invalid', pattern));
  refused(base.map((v, i) => (i === 3 ? Number.NaN : v)), /adapters x:1: the merged UNet's prediction is not finite/);
  refused(base.map((v) => v * 1e-3), /has collapsed/);
  refused(new Float32Array(256).fill(0.7), /has collapsed/);
  refused(base.map((v) => v * 100), /has blown up/);
  refused(base.map((v) => -v), /no longer agrees with the base model's \(cosine -1\.000/);
  refused(Float32Array.from({ length: 256 }, () => g.normal()), /no longer agrees/);
});

test('a merged UNet is probed before it is used: one that fails never serves and its thread ends', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  await copyFile(join(ADAPTERS, 'fixture-a.safetensors'), join(dir, 'fixture-a.safetensors'));
  const real = new Unet(await OnnxModel.load(UNET, { ...OPTIONS, label: 'unet' }));
  // a "base" that predicts the opposite noise: every merge disagrees with it
  const contrary = Object.assign(Object.create(real) as Unet, { predict: async (...args: Parameters<Unet['predict']>) => (await real.predict(...args)).map((e) => e.map((v) => -v)) });
  const store = new AdapterStore(dir, { unet: UNET }, SESSIONS, { probe: { unet: contrary, latentHeight: 8, latentWidth: 8 } });
  await assert.rejects(store.merged([{ name: 'fixture-a', weight: 1 }]), code('model_invalid', /adapters fixture-a:1: the merged UNet's prediction no longer agrees/));
  assert.equal(store.stats.variants, 0);
  const honest = new AdapterStore(dir, { unet: UNET }, SESSIONS, { probe: { unet: real, latentHeight: 8, latentWidth: 8 } });
  (await honest.merged([{ name: 'fixture-a', weight: 2 }])).release();
  await Promise.all([store.close(), honest.close()]);
});

test('a merged UNet from the store (built and run on a worker of its own) predicts like the explicit LoRA-branch reference; evicted once idle, it ends', async () => {
  const { store } = await storeWith(['fixture-a', 'fixture-b'], 1);
  const lease = await store.merged([{ name: 'fixture-a', weight: 1 }, { name: 'fixture-b', weight: 0.5 }]);
  const reference = new Unet(await OnnxModel.load(join(ADAPTERS, 'unet-lora-branch.onnx'), { provider: 'cpu', threads: 1, label: 'reference' }));
  const g = new Generator(3);
  const rows = [999, 499, 99].map((timestep) => ({ sample: Float32Array.from({ length: 4 * 8 * 8 }, () => g.normal()), timestep, context: Float32Array.from({ length: 77 * 8 }, () => g.normal()) }));
  const [got, want] = await Promise.all([lease.unet.predict(rows, 8, 8), reference.predict(rows, 8, 8)]);
  const error = got.reduce((m, eps, i) => eps.reduce((s, v, j) => Math.max(s, Math.abs(v - want[i]![j]!)), m), 0);
  assert.ok(error < 1e-4, `max error ${error}`);
  const next = store.merged([{ name: 'fixture-a', weight: 1 }]);
  await assert.rejects(next, code('rate_limited'), 'the one variant allowed is in use');
  assert.equal((await lease.unet.predict(rows, 8, 8)).length, 3, 'still usable');
  lease.release();
  (await store.merged([{ name: 'fixture-a', weight: 1 }])).release(); // evicts the first, now idle: it ends at once
  await assert.rejects(lease.unet.predict(rows, 8, 8), code('unavailable'));
  await store.close();
});

test('merged variants are bounded by the bytes of weights they hold, not only by count (idle ones go, least recently used first; in use and the newest stay)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  for (const n of ['fixture-a', 'fixture-b']) await copyFile(join(ADAPTERS, `${n}.safetensors`), join(dir, `${n}.safetensors`));
  const unetBytes = (await readFile(UNET)).length;
  // room for two merged UNets' weights, with a count limit that would allow four
  const store = new AdapterStore(dir, { unet: UNET }, SESSIONS, { maxVariants: 4, maxMergedBytes: 2.5 * unetBytes });
  const a = await store.merged([{ name: 'fixture-a', weight: 1 }]);
  assert.equal(a.weightBytes, unetBytes, "a merged UNet holds the UNet's weights once");
  a.release();
  (await store.merged([{ name: 'fixture-b', weight: 1 }])).release();
  assert.equal(store.mergedBytes, 2 * unetBytes);
  assert.ok(store.ready([{ name: 'fixture-a', weight: 1 }]), 'two fit');
  const half = await store.merged([{ name: 'fixture-a', weight: 0.5 }]);
  assert.equal(store.ready([{ name: 'fixture-a', weight: 1 }]), undefined, 'the least recently used is evicted by bytes');
  assert.ok(store.ready([{ name: 'fixture-b', weight: 1 }]) && store.ready([{ name: 'fixture-a', weight: 0.5 }]));
  assert.ok(store.mergedBytes <= 2.5 * unetBytes);
  half.release();
  const tiny = new AdapterStore(dir, { unet: UNET }, SESSIONS, { maxVariants: 4, maxMergedBytes: 1 });
  const held = await tiny.merged([{ name: 'fixture-a', weight: 1 }]);
  const newest = await tiny.merged([{ name: 'fixture-b', weight: 1 }]);
  assert.ok(tiny.ready([{ name: 'fixture-a', weight: 1 }]), 'a variant in use is not taken for bytes');
  assert.equal(tiny.mergedBytes, 2 * unetBytes);
  held.release();
  assert.equal(tiny.ready([{ name: 'fixture-a', weight: 1 }]), undefined, 'given back past the bound, it goes');
  newest.release();
  assert.ok(tiny.ready([{ name: 'fixture-b', weight: 1 }]), 'a budget smaller than one variant still keeps the newest');
  assert.equal(tiny.mergedBytes, unetBytes);
  await Promise.all([store.close(), tiny.close()]);
});

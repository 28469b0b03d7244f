import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadExperts } from '../../../models/aptp/experts.ts';
import { ServiceError } from '../../../models/errors.ts';
import { DEFAULT_PACK_OPTIONS, loadPack } from '../../../models/pack.ts';
import { Engine } from '../../../pipelines/engine.ts';
import { parseParams } from '../../../pipelines/params.ts';
import { pickExpert, routeExpert } from '../../../models/aptp/routing.ts';
import { BASE_PACK, FIXTURES, copyPack } from '../../helpers/fixtures.ts';

const EXPERT_FIXTURE = join(FIXTURES, 'experts');

/** A copy of the base fixture pack with the fixture experts in experts/. */
async function packWithExperts(): Promise<string> {
  const dir = await copyPack();
  await cp(EXPERT_FIXTURE, join(dir, 'experts'), { recursive: true });
  return dir;
}

const dir = await packWithExperts();
const engine = await Engine.load(dir);
const set = (await loadExperts(engine.pack))!;

const PROMPTS = [
  'a large red circle on the left on a blue background',
  'a small yellow triangle at the top on a black background',
  'a small red circle on the left and a large blue square on the right on a green background',
  'a large white square in the centre on a vertical gradient from black to white background',
  'a small green circle at the bottom on a purple background',
  'a large black triangle on the right on a horizontal gradient from red to yellow background',
  'a small blue square in the centre on a white background',
  'a green square',
];

async function pooled(prompt: string): Promise<Float32Array> {
  return (await engine.embed(prompt)).pooled;
}

test('a pack without experts/ has no expert set', async () => {
  const pack = await loadPack(BASE_PACK);
  assert.equal(await loadExperts(pack), undefined);
});

test('loads the manifest: the full expert reuses the pack UNet, the others are smaller graphs of the same contract', () => {
  assert.deepEqual(
    set.experts.map((e) => e.name),
    ['full', 'half', 'lite'],
  );
  assert.equal(set.full.name, 'full');
  assert.equal(set.full.unet, engine.pack.unet);
  assert.equal(set.full.relativeMacs, 1);
  for (const e of set.experts.slice(1)) {
    assert.notEqual(e.unet, engine.pack.unet);
    assert.ok(e.relativeMacs < 1 && e.parameters < set.full.parameters);
    assert.deepEqual(e.unet.timestep, engine.pack.unet.timestep);
  }
  assert.equal(set.router?.type, 'linear');
});

test('routing is deterministic and reaches more than one expert on real prompts', async () => {
  const first = await Promise.all(PROMPTS.map(async (p) => pickExpert(set, await pooled(p), 'auto').name));
  for (let round = 0; round < 3; round++) {
    const again = await Promise.all(PROMPTS.map(async (p) => pickExpert(set, Float32Array.from(await pooled(p)), 'auto').name));
    assert.deepEqual(again, first);
  }
  assert.ok(new Set(first).size >= 2, `all prompts went to ${first[0]}`);
});

test('choose buys the largest expert within a budget, follows the router on auto and obeys an override', async () => {
  for (const p of PROMPTS) {
    const v = await pooled(p);
    assert.equal(pickExpert(set, v, 'auto'), set.experts[routeExpert(v, set.router!)]);
    for (const budget of [0.5, 0.6, 0.7, 0.9, 1]) {
      const e = pickExpert(set, v, budget);
      assert.ok(e.relativeMacs <= budget, `${p} under ${budget}: ${e.name} (${e.relativeMacs})`);
      // the largest expert that fits serves
      assert.ok(set.experts.every((x) => x.relativeMacs > budget || x.relativeMacs <= e.relativeMacs), `${p} under ${budget}: a larger expert fits`);
    }
    assert.equal(pickExpert(set, v, 0.1).name, 'half'); // nothing fits: the smallest
    assert.equal(pickExpert(set, v, 0.3, 'full').name, 'full');
  }
  await assert.rejects(async () => pickExpert(set, await pooled(PROMPTS[0]!), 'auto', 'nope'), (e: ServiceError) => e.code === 'not_found' && /"nope"/.test(e.message));
});

test('without a router the largest expert within the budget serves', async () => {
  const d = await packWithExperts();
  const manifest = JSON.parse(await readFile(join(d, 'experts', 'manifest.json'), 'utf8')) as Record<string, unknown>;
  delete manifest['router'];
  await writeFile(join(d, 'experts', 'manifest.json'), JSON.stringify(manifest));
  const s = (await loadExperts(await loadPack(d)))!;
  const v = await pooled(PROMPTS[0]!);
  assert.equal(s.router, undefined);
  assert.equal(pickExpert(s, v, 'auto').name, 'full');
  assert.equal(pickExpert(s, v, 0.8).name, 'lite');
  assert.equal(pickExpert(s, v, 0.6).name, 'half');
});

// ------------------------------------------------------------------------------------- load errors

async function brokenPack(edit: (experts: string) => Promise<void>): Promise<string> {
  const d = await packWithExperts();
  await edit(join(d, 'experts'));
  return d;
}

async function editJson(file: string, change: (v: Record<string, unknown>) => void): Promise<void> {
  const v = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  change(v);
  await writeFile(file, JSON.stringify(v));
}

const expertList = (v: Record<string, unknown>) => v['experts'] as Record<string, unknown>[];

const LOAD_ERRORS: [string, (experts: string) => Promise<void>, RegExp][] = [
  ['manifest.json is not JSON', (x) => writeFile(join(x, 'manifest.json'), '{ "experts": ['), /experts\/manifest\.json is not valid JSON/],
  ['manifest.json is missing', (x) => rm(join(x, 'manifest.json')), /experts\/manifest\.json is missing/],
  ['router.json is not JSON', (x) => writeFile(join(x, 'router.json'), 'nope'), /experts\/router\.json is not valid JSON/],
  ['router.json is missing', (x) => rm(join(x, 'router.json')), /experts\/router\.json is missing/],
  ['router input_dim differs from the text encoder', (x) => editJson(join(x, 'router.json'), (v) => ((v['input_dim'] = 4), (v['weights'] = (v['weights'] as number[][]).map((r) => r.slice(0, 4))))), /router\.json: input_dim is 4, the text encoder's pooler_output has 8/],
  ['router weights of the wrong width', (x) => editJson(join(x, 'router.json'), (v) => (v['weights'] = (v['weights'] as number[][]).map((r) => r.slice(1)))), /router\.json: weights\[0\] has 7 values, expected 8/],
  ['router maps to an unknown expert', (x) => editJson(join(x, 'router.json'), (v) => ((v['expert_for_code'] as string[])[1] = 'ghost')), /expert_for_code\[1\] is "ghost"/],
  ['unknown full expert', (x) => editJson(join(x, 'manifest.json'), (v) => (v['full'] = 'giant')), /manifest\.json: full "giant" is not one of the experts/],
  ['no experts', (x) => editJson(join(x, 'manifest.json'), (v) => (v['experts'] = [])), /experts must be a non-empty array/],
  ['relative_macs out of range', (x) => editJson(join(x, 'manifest.json'), (v) => (expertList(v)[1]!['relative_macs'] = 1.7)), /experts\[1\]\.relative_macs must be a number in \(0, 1\]/],
  ['a duplicate name', (x) => editJson(join(x, 'manifest.json'), (v) => (expertList(v)[2]!['name'] = 'half')), /experts\[2\]\.name "half" is listed twice/],
  ['an unknown field', (x) => editJson(join(x, 'manifest.json'), (v) => (expertList(v)[0]!['macs'] = 3)), /experts\[0\]\.macs is not a known field/],
  ['a missing expert model', (x) => rm(join(x, 'half', 'model.onnx')), /experts\[1\]\.path "half\/model\.onnx" does not exist/],
  ['a path leaving the folder', (x) => editJson(join(x, 'manifest.json'), (v) => (expertList(v)[1]!['path'] = '../vae_decoder/model.onnx')), /experts\[1\]\.path "\.\.\/vae_decoder\/model\.onnx" leaves the experts folder/],
  ['a full expert that is not the pack UNet', (x) => editJson(join(x, 'manifest.json'), (v) => (expertList(v)[0]!['path'] = 'half/model.onnx')), /experts\[0\]\.path of the full expert must be "\.\.\/unet\/model\.onnx"/],
  ['an expert of another contract', (x) => cp(join(BASE_PACK, 'vae_decoder', 'model.onnx'), join(x, 'lite', 'model.onnx')), /lite|experts\[2\]/],
];

for (const [what, edit, pattern] of LOAD_ERRORS) {
  test(`load error: ${what}`, async () => {
    const d = await brokenPack(edit);
    const pack = await loadPack(d);
    await assert.rejects(loadExperts(pack), (e: ServiceError) => {
      assert.equal(e.code, 'model_invalid', e.message);
      assert.match(e.message, pattern);
      return true;
    });
  });
}


/** The embedded pack's experts and adapters through the server: listing, uploads, and streams served by them. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { scaledAdapter } from '../helpers/adapters.ts';

// A copy of the pack (read-only: uploads go to the data directory) and a data directory.
const packDir = await mkdtemp(join(tmpdir(), 'pack-'));
await cp(EMBEDDED_PACK_DIR, packDir, { recursive: true });
const dataDir = await mkdtemp(join(tmpdir(), 'data-'));
const engine = await Engine.load(packDir, { provider: 'cpu', threads: 0, adapters: { uploadDir: join(dataDir, 'adapters') } });
const server = await startServer({ port: 0, dataDir }, { engine });
after(() => server.close());
const frame = await shapeFrame();

test('GET /v1/experts lists the experts with their relative MACs and says there is a router', async () => {
  const body = (await (await fetch(`${server.url}/v1/experts`)).json()) as { experts: { name: string; relative_macs: number }[]; router: boolean };
  assert.equal(body.router, true);
  assert.ok(body.experts.length >= 3);
  assert.ok(body.experts.some((e) => e.name === 'full' && e.relative_macs === 1));
  assert.ok(body.experts.some((e) => e.relative_macs < 0.6));
});

test('a stream under a budget is served by an expert within it; a forced expert wins', async () => {
  const client = await StreamClient.connect(server.url, { params: { prompt: 'a large red circle in the centre on a blue background', budget: 0.5, steps: 1, similarity_threshold: 1 } });
  const out = await client.roundTrip(frame);
  const experts = ((await (await fetch(`${server.url}/v1/experts`)).json()) as { experts: { name: string; relative_macs: number }[] }).experts;
  const served = experts.find((e) => e.name === out.meta['expert'])!;
  assert.ok(served.relative_macs <= 0.5, JSON.stringify(out.meta));
  client.send({ type: 'update', params: { expert: 'full' } });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  assert.equal((await client.roundTrip(frame)).meta['expert'], 'full');
  await client.close();
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, new RegExp(`sd_expert_frames_total\\{expert="${served.name}"\\} \\d+`));
});

test('GET /v1/adapters lists the pack\'s adapters; a stream with one reports it and runs the full UNet', async () => {
  const { adapters } = (await (await fetch(`${server.url}/v1/adapters`)).json()) as { adapters: { name: string; method?: string; conceptTokens: string[] }[] };
  const heart = adapters.find((a) => a.name === 'heart');
  assert.equal(heart?.method, 'orthogonal');
  assert.deepEqual(heart.conceptTokens, ['heart'], 'the pack\'s adapters bring a learned token for their word');
  const client = await StreamClient.connect(server.url, { params: { prompt: 'a large red heart in the centre on a blue background', steps: 1, adapters: [{ name: 'heart', weight: 1 }] } });
  const out = await client.roundTrip(frame);
  assert.deepEqual(out.meta['adapters'], [{ name: 'heart', weight: 1 }]);
  assert.equal(out.meta['expert'], 'full');
  await client.close();
});

test('adapter upload: a valid file is stored and listed, a malformed one is refused and changes nothing', async () => {
  const bytes = await readFile(join(packDir, 'adapters', 'ring.safetensors'));
  const ok = await fetch(`${server.url}/v1/adapters?name=ring2`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  assert.equal(ok.status, 201);
  const bad = await fetch(`${server.url}/v1/adapters?name=broken`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('not safetensors at all') });
  assert.equal(bad.status, 422);
  const traversal = await fetch(`${server.url}/v1/adapters?name=../../x`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  assert.equal(traversal.status, 400);
  const listed = ((await (await fetch(`${server.url}/v1/adapters`)).json()) as { adapters: { name: string; source: string }[] }).adapters;
  assert.equal(listed.find((a) => a.name === 'ring2')?.source, 'upload');
  assert.equal(listed.find((a) => a.name === 'ring')?.source, 'pack');
  assert.ok(!listed.some((a) => a.name === 'broken'));
  // under <data-dir>/adapters/<pack name> (this copy of the pack is named after its folder)
  assert.ok((await readdir(join(dataDir, 'adapters', engine.pack.name))).includes('ring2.safetensors'), 'stored under the data directory');
  assert.ok(!(await readdir(join(packDir, 'adapters'))).includes('ring2.safetensors'), 'the pack is not written');
});

test('adapter upload: concurrent uploads of one name -> one 201, the rest 409; ?replace=1 replaces it; a pack adapter cannot be replaced', async () => {
  const bytes = await readFile(join(packDir, 'adapters', 'heart.safetensors'));
  const post = (name: string, query = '') => fetch(`${server.url}/v1/adapters?name=${name}${query}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
  const statuses = (await Promise.all(Array.from({ length: 5 }, () => post('race')))).map((r) => r.status).sort();
  assert.deepEqual(statuses, [201, 409, 409, 409, 409]);
  assert.equal((await post('race', '&replace=1')).status, 201);
  assert.equal((await post('race', '&replace=yes')).status, 400);
  const packOwn = await post('heart', '&replace=1');
  assert.equal(packOwn.status, 409);
  assert.match(((await packOwn.json()) as { error: { message: string } }).error.message, /belongs to the model pack/);
});

test('adapter upload: a poisoned adapter (every lora_up x 1e37, finite) is refused with 422 and never stored or served', async () => {
  const poisoned = await scaledAdapter(join(packDir, 'adapters', 'ring.safetensors'), 1e37);
  const r = await fetch(`${server.url}/v1/adapters?name=poison`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from(poisoned) });
  assert.equal(r.status, 422);
  assert.match(((await r.json()) as { error: { message: string } }).error.message, /over the bound/);
  const names = ((await (await fetch(`${server.url}/v1/adapters`)).json()) as { adapters: { name: string }[] }).adapters.map((a) => a.name);
  assert.ok(!names.includes('poison'));
});

test('a stream that changes its adapter weight again and again lets go of each variant it leaves: every change applies, none waits for a free variant', async () => {
  // 4 variants may be alive (the default): a stream holding on to the ones it left would be refused by the 5th change
  const client = await StreamClient.connect(server.url, { params: { prompt: 'a large ring in the centre', steps: 1, similarity_threshold: 1, adapters: [{ name: 'ring', weight: 0.5 }] } });
  await client.roundTrip(frame);
  for (let i = 1; i <= 6; i++) {
    const weight = 0.5 + i / 20;
    const updated = client.messages.filter((m) => m['type'] === 'updated').length;
    client.send({ type: 'update', params: { adapters: [{ name: 'ring', weight }] } });
    await client.until(() => client.messages.filter((m) => m['type'] === 'updated').length > updated || client.messages.some((m) => m['type'] === 'error'), 60_000);
    assert.deepEqual(client.messages.filter((m) => m['type'] === 'error'), [], `change ${i}`);
    const out = await client.roundTrip(frame);
    assert.deepEqual(out.meta['adapters'], [{ name: 'ring', weight }], `change ${i} serves the new weight`);
  }
  await client.close();
});

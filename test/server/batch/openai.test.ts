import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { postJson, startServer, type TestServer } from './helpers.ts';

let server: TestServer;
let client: OpenAI;
before(async () => {
  server = await startServer();
  // the official SDK, unchanged but for its base URL
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'test-key', maxRetries: 0 });
});
after(() => server.close());

async function meta(bytes: Buffer) {
  const m = await sharp(bytes).metadata();
  return { width: m.width, height: m.height, format: m.format };
}

test('openai SDK: images.generate returns n base64 PNGs of the requested size', async () => {
  const res = await client.images.generate({ model: 'tiny-shapes', prompt: 'a green triangle', n: 2, size: '64x64' as '256x256', response_format: 'b64_json' });
  assert.ok(res.created > 0);
  assert.equal(res.data?.length, 2);
  const [a, b] = res.data!.map((d) => Buffer.from(d.b64_json!, 'base64'));
  assert.deepEqual(await meta(a!), { width: 64, height: 64, format: 'png' });
  assert.ok(!a!.equals(b!), 'image 1 uses seed + 1');
});

test('openai SDK: output_format jpeg and webp', async () => {
  for (const format of ['jpeg', 'webp'] as const) {
    const res = await client.images.generate({ prompt: 'a circle', size: '64x64' as '256x256', output_format: format });
    assert.equal((await meta(Buffer.from(res.data![0]!.b64_json!, 'base64'))).format, format);
  }
});

test('openai SDK: response_format url gives a URL this server serves', async () => {
  const res = await client.images.generate({ prompt: 'a square', size: '64x64' as '256x256', response_format: 'url' });
  const url = res.data![0]!.url!;
  assert.ok(url.startsWith(`${server.url}/v1/images/results/`), url);
  const file = await fetch(url);
  assert.equal(file.status, 200);
  assert.deepEqual(await meta(Buffer.from(await file.arrayBuffer())), { width: 64, height: 64, format: 'png' });
  assert.equal((await fetch(`${server.url}/v1/images/results/..%2Fjobs`)).status, 404);
  assert.equal((await fetch(`${server.url}/v1/images/results/00000000-0000-0000-0000-000000000000.png`)).status, 404);
});

test('openai SDK: images.edit (multipart upload) returns edited images; several images as image[]', async () => {
  const png = await sharp({ create: { width: 90, height: 70, channels: 3, background: { r: 10, g: 200, b: 10 } } }).png().toBuffer();
  const res = await client.images.edit({ image: await toFile(png, 'in.png', { type: 'image/png' }), prompt: 'make it red', n: 2, size: '64x64' as '256x256' });
  assert.equal(res.data?.length, 2);
  assert.deepEqual(await meta(Buffer.from(res.data![0]!.b64_json!, 'base64')), { width: 64, height: 64, format: 'png' });
  const two = await client.images.edit({
    image: [await toFile(png, 'a.png', { type: 'image/png' }), await toFile(png, 'b.png', { type: 'image/png' })],
    prompt: 'x',
    size: '64x64' as '256x256',
  });
  assert.equal(two.data?.length, 1);
});

test('openai SDK: errors arrive as APIError with the status and a message naming the field', async () => {
  await assert.rejects(
    client.images.generate({ prompt: 'x', size: '100x64' as '256x256' }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /size/.test(e.message),
  );
  await assert.rejects(
    client.images.generate({ prompt: 'x', n: 11 }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /\bn\b/.test(e.message),
  );
  const bad = await toFile(Buffer.from('not an image'), 'x.png', { type: 'image/png' });
  await assert.rejects(
    client.images.edit({ image: bad, prompt: 'x', size: '64x64' as '256x256' }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /image/.test(e.message),
  );
});

test('invalid OpenAI requests over plain HTTP: 4xx naming the field', async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{}, 'prompt'],
    [{ prompt: 'x', size: 'big' }, 'size'],
    [{ prompt: 'x', response_format: 'gif' }, 'response_format'],
    [{ prompt: 'x', output_format: 'bmp' }, 'output_format'],
    [{ prompt: 'x', stream: true }, 'stream'],
    [{ prompt: 'x', colour: 'red' }, 'colour'],
  ];
  for (const [body, field] of cases) {
    const res = await postJson(`${server.url}/v1/images/generations`, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.field, field);
    assert.ok(res.body.error.message.includes(field), res.body.error.message);
  }
  const noFile = new FormData();
  noFile.set('prompt', 'x');
  const res = await fetch(`${server.url}/v1/images/edits`, { method: 'POST', body: noFile });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { error: { field: string } }).error.field, 'image');
  const json = await postJson(`${server.url}/v1/images/edits`, { prompt: 'x' });
  assert.equal(json.status, 400);
});

test('an upload over maxUploadBytes is refused with 413', async () => {
  const small = await startServer({ config: { maxUploadBytes: 1000 } });
  try {
    const form = new FormData();
    form.set('prompt', 'x');
    form.set('image', new Blob([new Uint8Array(5000)], { type: 'image/png' }), 'big.png');
    const res = await fetch(`${small.url}/v1/images/edits`, { method: 'POST', body: form });
    assert.equal(res.status, 413);
  } finally {
    await small.close();
  }
});

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

test('openai: every generation parameter as an extension field (JSON, or multipart form text), <lora:> tags, seeds and notes in the answer', async () => {
  const generate = async (body: Record<string, unknown>) => (await client.images.generate({ size: '64x64' as '256x256', ...body } as OpenAI.ImageGenerateParamsNonStreaming)) as OpenAI.ImagesResponse & { notes: string[]; data: { seed: number }[] };
  const base = { prompt: 'a green triangle', seed: 4, steps: 2 };
  const plain = await generate(base);
  assert.equal(plain.data[0]!.seed, 4);
  assert.deepEqual(plain.notes, []);
  const extended = await generate({ ...base, guidance: 'initialize', guidance_scale: 5, delta: 0.5, t_index_list: [15, 35], prompt_blend: 'slerp' });
  assert.notEqual(extended.data[0]!.b64_json, plain.data[0]!.b64_json);
  assert.match(extended.notes.join(), /guidance scale 5 is outside this model's recommended range 1-2: 2 is used/);
  const text = (await sharp(Buffer.from(extended.data[0]!.b64_json!, 'base64')).metadata()).comments?.[0]?.text ?? '';
  assert.match(text, /CFG scale: 2, Seed: 4, Size: 64x64, .*Guidance: initialize, RCFG delta: 0.5, T index list: "\[15,35\]"/);
  const random = await generate({ prompt: 'a green triangle', steps: 1, n: 2 });
  assert.equal(random.data[1]!.seed, (random.data[0]!.seed + 1) % 2 ** 32, 'a random seed, reported; image j uses seed + j');
  // <lora:> tags leave the prompt and choose adapters: this fixture model has none, and says which were asked for
  const tagged = await postJson(`${server.url}/v1/images/generations`, { prompt: 'a heart <lora:heart:0.7>', size: '64x64' });
  assert.equal(tagged.status, 404);
  assert.match(tagged.body.error.message, /no adapters \(asked for heart\)/);
  // a multipart form sends numbers, lists and booleans as text
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 10, g: 200, b: 10 } } }).png().toBuffer();
  const edit = (await client.images.edit({
    image: await toFile(png, 'in.png', { type: 'image/png' }), prompt: 'a red square', size: '64x64' as '256x256',
    ...{ seed: 3, strength: 0.7, guidance: 'full', guidance_scale: 1.5, strict_guidance: true },
  } as OpenAI.ImageEditParamsNonStreaming)) as OpenAI.ImagesResponse;
  const editText = (await sharp(Buffer.from(edit.data![0]!.b64_json!, 'base64')).metadata()).comments?.[0]?.text ?? '';
  assert.match(editText, /CFG scale: 1.5, Seed: 3, Size: 64x64, Model: base, Denoising strength: 0.7, Guidance: full, Strict guidance: true/);
  for (const [body, field] of [
    [{ prompt: 'x', budget: 2 }, 'budget'],
    [{ prompt: 'x', adapters: [{ name: '../x', weight: 1 }] }, 'adapters.0.name'],
    [{ prompt: 'x', size: '64x64', width: 64 }, 'size'],
    [{ prompt: 'x', guidance: 'most' }, 'guidance'],
  ] as const) {
    const res = await postJson(`${server.url}/v1/images/generations`, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.field, field, JSON.stringify(res.body));
  }
});

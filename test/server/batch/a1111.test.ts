import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { Engine } from '../../../pipelines/engine.ts';
import { BASE_PACK } from '../../helpers/fixtures.ts';
import { getJson, postJson, startServer, type TestServer } from './helpers.ts';

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(() => server.close());

const small = { width: 64, height: 64, steps: 1 };

async function pngSize(b64: string): Promise<{ width?: number; height?: number; format?: string }> {
  const meta = await sharp(Buffer.from(b64, 'base64')).metadata();
  return { width: meta.width, height: meta.height, format: meta.format };
}

test('txt2img: A1111 response shape, batch_size x n_iter images with consecutive seeds, unsupported fields listed', async () => {
  const { status, body } = await postJson(`${server.url}/sdapi/v1/txt2img`, {
    prompt: 'a red circle',
    negative_prompt: 'blurry',
    seed: 40,
    ...small,
    batch_size: 2,
    n_iter: 2,
    cfg_scale: 3,
    sampler_name: 'Euler a',
    restore_faces: false,
    enable_hr: false,
    styles: null,
  });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.images.length, 4);
  assert.deepEqual(await pngSize(body.images[0]), { width: 64, height: 64, format: 'png' });
  assert.equal(typeof body.info, 'string');
  const info = JSON.parse(body.info);
  assert.equal(info.seed, 40);
  assert.deepEqual(info.all_seeds, [40, 41, 42, 43]);
  assert.equal(info.sampler_name, 'LCM');
  assert.equal(info.guidance, 'full');
  assert.equal(info.cfg_scale, 2, 'cfg_scale 3 is above the model\'s range (1-2): the scale used is reported');
  assert.deepEqual(info.unsupported_fields.sort(), ['enable_hr', 'restore_faces']);
  assert.ok(info.notes.some((n: string) => n.includes('Euler a')));
  assert.ok(info.notes.some((n: string) => /guidance scale 3 is outside this model's recommended range 1-2: 2 is used/.test(n)), info.notes.join('\n'));
  assert.match(info.infotexts[1], /Seed: 41, Size: 64x64/);
  assert.equal(body.parameters.prompt, 'a red circle');
  assert.equal(body.parameters.seed, 40);
});

test('txt2img: seed -1 draws a seed and reports it; the reported seed reproduces the image', async () => {
  const a = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'a square', seed: -1, ...small });
  assert.equal(a.status, 200);
  const used = JSON.parse(a.body.info).seed;
  assert.ok(Number.isInteger(used) && used >= 0, `seed ${used}`);
  const b = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'a square', seed: used, ...small });
  assert.equal(b.body.images[0], a.body.images[0]);
});

test('txt2img: steps over the LCM maximum are clamped and said so; send_images false returns none', async () => {
  const { status, body } = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'x', steps: 20, width: 64, height: 64, send_images: false });
  assert.equal(status, 200);
  assert.deepEqual(body.images, []);
  const info = JSON.parse(body.info);
  assert.equal(info.steps, 8);
  assert.ok(info.notes.some((n: string) => n.includes('clamped')));
});

test('img2img: init image as a data URL, denoising_strength default 0.75, image at the requested size', async () => {
  const input = await sharp({ create: { width: 80, height: 50, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer();
  const { status, body } = await postJson(`${server.url}/sdapi/v1/img2img`, {
    init_images: [`data:image/png;base64,${input.toString('base64')}`],
    prompt: 'a blue square',
    seed: 3,
    ...small,
    mask: null,
    resize_mode: 0,
  });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.images.length, 1);
  assert.deepEqual(await pngSize(body.images[0]), { width: 64, height: 64, format: 'png' });
  const info = JSON.parse(body.info);
  assert.equal(info.denoising_strength, 0.75);
  assert.deepEqual(info.unsupported_fields, ['resize_mode']);
  assert.equal(body.parameters.init_images, null);
});

test('invalid A1111 requests: 400 with a message naming the field', async () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['/sdapi/v1/txt2img', { prompt: 'x', steps: 'many' }, 'steps'],
    ['/sdapi/v1/txt2img', { prompt: 'x', cfg_scale: 50 }, 'cfg_scale'],
    ['/sdapi/v1/txt2img', { prompt: 'x', width: 100 }, 'width'],
    ['/sdapi/v1/txt2img', { prompt: 'x', width: 72, height: 64 }, 'width'], // not a multiple of the pack's 16
    ['/sdapi/v1/txt2img', { prompt: 'x', batch_size: 16, n_iter: 16 }, 'n_iter'],
    ['/sdapi/v1/txt2img', { prompt: 'x', seed: -2 }, 'seed'],
    ['/sdapi/v1/txt2img', { prompt: 'x', promt: 'typo' }, 'promt'],
    ['/sdapi/v1/img2img', { prompt: 'x' }, 'init_images'],
    ['/sdapi/v1/img2img', { init_images: ['not base64!'] }, 'init_images.0'],
    ['/sdapi/v1/img2img', { init_images: [Buffer.from('hello').toString('base64')] }, 'init_images.0'],
    ['/sdapi/v1/img2img', { init_images: ['aGk='], denoising_strength: 0 }, 'denoising_strength'],
  ];
  for (const [path, body, field] of cases) {
    const res = await postJson(`${server.url}${path}`, body);
    assert.ok(res.status >= 400 && res.status < 500, `${JSON.stringify(body)} -> ${res.status}`);
    assert.equal(res.body.error.field, field, JSON.stringify(res.body));
    assert.ok(res.body.error.message.includes(field), res.body.error.message);
  }
  const notJson = await fetch(`${server.url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{bad' });
  assert.equal(notJson.status, 400);
});

test('progress: idle state, and a running render shows its steps', async () => {
  const idle = await getJson(`${server.url}/sdapi/v1/progress`);
  assert.equal(idle.status, 200);
  assert.deepEqual(
    { progress: idle.body.progress, job_count: idle.body.state.job_count, current_image: idle.body.current_image },
    { progress: 0, job_count: 0, current_image: null },
  );
  for (const key of ['eta_relative', 'state']) assert.ok(key in idle.body, key);
  for (const key of ['job_count', 'sampling_step', 'sampling_steps']) assert.ok(key in idle.body.state, key);
  // a longer render, polled while it runs
  const render = postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'x', width: 128, height: 128, steps: 4, batch_size: 1, n_iter: 12, seed: 1 });
  let seen: { job_count: number; sampling_steps: number } | undefined;
  let settled = false;
  void render.finally(() => (settled = true));
  while (!settled && !seen) {
    const p = await getJson(`${server.url}/sdapi/v1/progress`);
    if (p.body.state.job_count > 0 && p.body.state.sampling_steps > 0) seen = p.body.state;
    else await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal((await render).status, 200);
  assert.ok(seen, 'progress never showed the running render');
  assert.equal(seen.job_count, 1);
  assert.equal(seen.sampling_steps, 48); // 12 images, one lane each, 4 steps
});

test('sd-models, samplers and options describe the one model and sampler', async () => {
  const models = await getJson(`${server.url}/sdapi/v1/sd-models`);
  assert.equal(models.status, 200);
  assert.equal(models.body.length, 1);
  assert.equal(models.body[0].model_name, server.ctx.engine.pack.name);
  assert.ok('title' in models.body[0] && 'filename' in models.body[0]);
  const samplers = await getJson(`${server.url}/sdapi/v1/samplers`);
  assert.equal(samplers.body[0].name, 'LCM');
  const options = await getJson(`${server.url}/sdapi/v1/options`);
  assert.equal(options.body.sd_model_checkpoint, server.ctx.engine.pack.name);
});

test('the images metric counts per endpoint', async () => {
  const metric = await server.ctx.metrics.images.get();
  const txt = metric.values.find((v) => v.labels['endpoint'] === '/sdapi/v1/txt2img');
  assert.ok(txt && txt.value >= 4);
});

test('A1111 <lora:name:weight> prompt tags reach the UNet choice (pipelines/prompt-syntax.ts reads them)', async () => {
  // the tag reaches the UNet choice: this fixture model has no adapters, and says which were asked for
  const { status, body } = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'a red heart <lora:heart:1>', ...small });
  assert.equal(status, 404, JSON.stringify(body));
  assert.match(body.error.message, /no adapters \(asked for heart\)/);
});

test('a render runs on the UNet its adapters name (merged variant through the batcher), not the pack\'s', async () => {
  const engine = await Engine.load(BASE_PACK);
  const calls: string[] = [];
  const spy = (name: string) => Object.assign(Object.create(engine.pack.unet), {
    predict: (...args: Parameters<typeof engine.pack.unet.predict>) => (calls.push(name), engine.pack.unet.predict(...args)),
  });
  engine.attach({ adapters: { merged: async (adapters) => ({ unet: spy(adapters.map((a) => a.name).join('+')), warnings: [] }) } });
  const own = await startServer({ engine });
  try {
    const { status, body } = await postJson(`${own.url}/sdapi/v1/txt2img`, { prompt: 'a red heart <lora:heart:1>', ...small });
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(calls, ['heart'], 'one UNet call (1 step), on the merged UNet');
  } finally {
    await own.close();
  }
});

test('this service\'s parameters ride in override_settings or the StreamDiffusion script; other settings and scripts are listed as unsupported', async () => {
  const base = { prompt: 'a red circle', seed: 5, cfg_scale: 2, ...small };
  const plain = await postJson(`${server.url}/sdapi/v1/txt2img`, base);
  const viaSettings = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...base, override_settings: { guidance: 'initialize', delta: 0.5, CLIP_stop_at_last_layers: 2 } });
  const viaScript = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...base, alwayson_scripts: { StreamDiffusion: { args: [{ guidance: 'initialize', delta: 0.5 }] }, ControlNet: { args: [] } } });
  for (const res of [plain, viaSettings, viaScript]) assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(viaSettings.body.images[0], viaScript.body.images[0], 'the same parameters either way');
  assert.notEqual(viaSettings.body.images[0], plain.body.images[0], 'and they take effect');
  const info = JSON.parse(viaSettings.body.info);
  assert.equal(info.guidance, 'initialize');
  assert.match(info.infotexts[0], /Guidance: initialize, RCFG delta: 0.5/);
  assert.deepEqual(info.unsupported_fields, ['override_settings.CLIP_stop_at_last_layers']);
  assert.deepEqual(JSON.parse(viaScript.body.info).unsupported_fields, ['alwayson_scripts.ControlNet']);
  const errors: [Record<string, unknown>, string][] = [
    [{ override_settings: { budget: 2 } }, 'override_settings.budget'],
    [{ override_settings: { adapters: [{ name: 'heart', weight: 'x' }] } }, 'override_settings.adapters.0.weight'],
    [{ alwayson_scripts: { StreamDiffusion: { args: [{ budgett: 0.5 }] } } }, 'alwayson_scripts.StreamDiffusion.args.0.budgett'],
    [{ alwayson_scripts: { StreamDiffusion: { args: ['initialize'] } } }, 'alwayson_scripts.StreamDiffusion.args.0'],
    [{ subseed: 3, subseed_strength: 2 }, 'subseed_strength'],
  ];
  for (const [extra, field] of errors) {
    const res = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...base, ...extra });
    assert.equal(res.status, 400, JSON.stringify(extra));
    assert.equal(res.body.error.field, field, JSON.stringify(res.body));
  }
});

test('a variation seed (subseed at subseed_strength) blends the noise and is reported; AND blends prompts', async () => {
  const base = { prompt: 'a red circle', seed: 5, ...small, batch_size: 2 };
  const varied = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...base, subseed: 9, subseed_strength: 0.4 });
  const info = JSON.parse(varied.body.info);
  assert.deepEqual([info.all_seeds, info.all_subseeds, info.subseed_strength], [[5, 6], [9, 10], 0.4]);
  assert.match(info.infotexts[1], /Seed: 6, .*Seed blend: "6:0.6, 10:0.4"/);
  const plain = await postJson(`${server.url}/sdapi/v1/txt2img`, base);
  assert.notEqual(varied.body.images[0], plain.body.images[0]);
  const blended = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...base, prompt: 'a red circle :0.5 AND a blue square :0.5' });
  assert.match(JSON.parse(blended.body.info).infotexts[0], /^a red circle :0.5 AND a blue square :0.5\n/);
});

test('png-info reads the parameters of a PNG it wrote; an image without them, or not an image, says so', async () => {
  const made = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'a red, round circle', negative_prompt: 'blue', seed: 8, cfg_scale: 1.5, ...small });
  const info = await postJson(`${server.url}/sdapi/v1/png-info`, { image: `data:image/png;base64,${made.body.images[0]}` });
  assert.equal(info.status, 200);
  assert.equal(info.body.info, JSON.parse(made.body.info).infotexts[0]);
  assert.equal(info.body.items.parameters, info.body.info);
  assert.equal(info.body.parameters['Prompt'], 'a red, round circle');
  assert.equal(info.body.parameters['Negative prompt'], 'blue');
  assert.deepEqual(info.body.params, { prompt: 'a red, round circle', negative_prompt: 'blue', steps: 1, guidance: 'full', guidance_scale: 1.5, seed: 8, width: 64, height: 64 });
  const bare = await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } }).png().toBuffer();
  const none = await postJson(`${server.url}/sdapi/v1/png-info`, { image: bare.toString('base64') });
  assert.deepEqual([none.status, none.body.info, none.body.params], [200, '', null]);
  for (const [body, field] of [[{ image: 'not base64!' }, 'image'], [{ image: Buffer.from('hello').toString('base64') }, 'image'], [{}, 'image']] as const) {
    const res = await postJson(`${server.url}/sdapi/v1/png-info`, body);
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.error.field, field);
  }
});

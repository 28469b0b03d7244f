/**
 * Real clients on the embedded tiny-shapes pack, judged by the scene evaluator:
 * - a plain HTTP client sending what the AUTOMATIC1111 web UI sends (cfg_scale 7, 20 steps, DPM++ 2M, 512x512 ...)
 *   gets correct images, and notes that say what was changed to get them;
 * - the official openai SDK renders with an adapter and with a compute budget through extension fields;
 * - a PNG the service wrote reads back through POST /sdapi/v1/png-info to the same parameters, which render the
 *   same bytes again (through /v1/jobs and through the openai SDK).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import sharp from 'sharp';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { Engine } from '../../../pipelines/engine.ts';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage, type HeldOutItem, type SceneSpec } from '../../../pipelines/evaluation/evaluator.ts';
import { scoreConcept } from '../../../pipelines/evaluation/concept-score.ts';
import { postJson, startServer, waitForJob, type Json, type TestServer } from './helpers.ts';

let server: TestServer;
let client: OpenAI;
let spec: SceneSpec;
let heldOut: HeldOutItem[];

before(async () => {
  server = await startServer({ engine: await Engine.load() });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
  heldOut = await loadHeldOut(EMBEDDED_PACK_DIR);
});
after(() => server.close());

async function rgb(bytes: Buffer) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** The body the A1111 web UI's txt2img sends through its API (A1111 1.10 defaults), for one prompt. */
function webUiBody(prompt: string): Json {
  return {
    prompt, negative_prompt: '', styles: [], seed: -1, subseed: -1, subseed_strength: 0, seed_resize_from_h: -1, seed_resize_from_w: -1,
    sampler_name: 'DPM++ 2M', scheduler: 'Automatic', batch_size: 1, n_iter: 1, steps: 20, cfg_scale: 7, width: 512, height: 512,
    restore_faces: false, tiling: false, do_not_save_samples: false, do_not_save_grid: false, eta: null, denoising_strength: 0.7,
    s_min_uncond: 0, s_churn: 0, s_tmax: null, s_tmin: 0, s_noise: 1, override_settings: {}, override_settings_restore_afterwards: true,
    refiner_checkpoint: null, refiner_switch_at: null, disable_extra_networks: false, comments: {}, enable_hr: false, firstphase_width: 0,
    firstphase_height: 0, hr_scale: 2, hr_upscaler: 'Latent', hr_second_pass_steps: 0, hr_resize_x: 0, hr_resize_y: 0, hr_checkpoint_name: null,
    hr_sampler_name: null, hr_scheduler: null, hr_prompt: '', hr_negative_prompt: '', force_task_id: null, sampler_index: 'Euler', script_name: null,
    script_args: [], send_images: true, save_images: false, alwayson_scripts: {},
  };
}

test('A1111 web UI defaults (cfg_scale 7, 512x512, 20 steps) give correct images, and notes say why', async (t) => {
  const items = heldOut.slice(0, 12);
  const judged = async (extra: Json) => {
    const scores = [];
    for (const item of items) {
      // the web UI's body with the held-out caption's own seed (its default -1 is checked below): a judged set is reproducible
      const res = await postJson(`${server.url}/sdapi/v1/txt2img`, { ...webUiBody(item.caption), seed: item.seed % 2 ** 32, ...extra });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const bytes = Buffer.from(res.body.images[0], 'base64');
      const image = await rgb(bytes);
      assert.deepEqual([image.width, image.height], [512, 512], 'the size asked for');
      scores.push(scoreImage(spec, image, item.attributes));
      if (scores.length === 1) {
        const info = JSON.parse(res.body.info);
        const notes = (info.notes as string[]).join('\n');
        if (extra['override_settings']) assert.doesNotMatch(notes, /guidance scale/, 'strict_guidance: nothing changed');
        else assert.match(notes, /guidance scale 7 is outside this model's recommended range 1-2: 2 is used/);
        assert.match(notes, /512x512 is outside this model's size range 128-160: rendered at 128x128/);
        assert.match(notes, /steps 20 clamped to 8/);
        assert.match(notes, /DPM\+\+ 2M/);
      }
    }
    return accuracy(scores);
  };
  const random = await postJson(`${server.url}/sdapi/v1/txt2img`, webUiBody(items[0]!.caption));
  const drawn = JSON.parse(random.body.info).seed;
  assert.ok(Number.isInteger(drawn) && drawn >= 0, `seed -1: a random seed, reported (${drawn})`);
  assert.match(JSON.parse(random.body.info).infotexts[0], new RegExp(`Seed: ${drawn},`), 'and written into the PNG');
  const fitted = await judged({});
  for (const key of ['background', 'objectColor', 'shape', 'position'] as const) assert.ok(fitted[key] >= 0.9, `${key} ${fitted[key]}: ${JSON.stringify(fitted)}`);
  // what the notes saved the user from: the raw cfg_scale 7 (the size still fitted)
  const raw = await judged({ override_settings: { strict_guidance: true } });
  t.diagnostic(`accuracy on ${items.length} held-out captions: fitted ${JSON.stringify(fitted)}, cfg 7 as given ${JSON.stringify(raw)}`);
  const mean = (a: typeof fitted) => (a.objectColor + a.shape) / 2;
  assert.ok(mean(raw) < mean(fitted) - 0.15, `cfg 7 as given scores lower: ${JSON.stringify(raw)} vs ${JSON.stringify(fitted)}`);
});

test('openai SDK: an adapter and a budget through extension fields', async (t) => {
  const hearts = heldOut.filter((i) => i.attributes.objects.length === 1).slice(0, 4);
  // the answer's extension fields (notes) are there at run time; the SDK's types list only OpenAI's own
  const generate = async (body: Json) => (await client.images.generate(body as OpenAI.ImageGenerateParamsNonStreaming)) as OpenAI.ImagesResponse & { notes: string[] };
  let withAdapter = 0;
  let without = 0;
  for (const [i, item] of hearts.entries()) {
    const o = item.attributes.objects[0]!;
    const caption = `a ${o.size} ${o.color} heart ${item.caption.slice(item.caption.indexOf(o.shape) + o.shape.length + 1)}`;
    const attributes = { ...item.attributes, objects: [{ ...o, shape: 'heart' }] };
    const base = { prompt: caption, seed: 100 + i, steps: 4, guidance: 'full', guidance_scale: 2 };
    const a = await generate({ ...base, adapters: [{ name: 'heart', weight: 1 }] });
    if (scoreConcept(spec, await rgb(Buffer.from(a.data![0]!.b64_json!, 'base64')), attributes).shape) withAdapter++;
    const b = await generate(base);
    if (scoreConcept(spec, await rgb(Buffer.from(b.data![0]!.b64_json!, 'base64')), attributes).shape) without++;
  }
  t.diagnostic(`hearts drawn: ${withAdapter}/4 with the adapter, ${without}/4 without`);
  assert.ok(withAdapter >= 3 && without <= 1, `hearts drawn: ${withAdapter}/4 with the adapter, ${without}/4 without`);
  // a budget serves the largest expert within it, and the image still shows its caption
  const item = heldOut[20]!;
  const cheap = await generate({ prompt: item.caption, seed: 3, steps: 4, guidance: 'full', guidance_scale: 2, budget: 0.6 });
  const text = (await sharp(Buffer.from(cheap.data![0]!.b64_json!, 'base64')).metadata()).comments?.find((c) => c.keyword === 'parameters')?.text ?? '';
  assert.match(text, /Budget: 0\.6, Expert: expert_060/);
  const score = scoreImage(spec, await rgb(Buffer.from(cheap.data![0]!.b64_json!, 'base64')), item.attributes);
  assert.ok(score.background && score.objects.every((x) => x.color), JSON.stringify(score));
  // both at once: adapters run on the full UNet, and the answer says the budget was not applied
  const both = await generate({ prompt: 'a large red heart in the centre on a blue background', seed: 1, adapters: [{ name: 'heart', weight: 1 }], budget: 0.6 });
  assert.ok(both.notes.some((n) => /adapters merge into the full UNet only: budget 0.6 not applied/.test(n)), both.notes.join('\n'));
});

test('a PNG round-trips through /sdapi/v1/png-info to the same parameters and renders the same bytes again', async () => {
  // an A1111 request using much of the vocabulary: a variation seed, a negative prompt, an out-of-range scale and size, a budget
  const first = await postJson(`${server.url}/sdapi/v1/txt2img`, {
    prompt: 'a large red circle on the left on a white background :0.7 AND a small blue square on the right on a white background :0.3',
    negative_prompt: 'a green background',
    seed: 11, subseed: 12, subseed_strength: 0.25, steps: 3, cfg_scale: 7, width: 256, height: 256,
    override_settings: { budget: 0.6, prompt_blend: 'slerp' },
  });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const png = Buffer.from(first.body.images[0], 'base64');
  const info = await postJson(`${server.url}/sdapi/v1/png-info`, { image: png.toString('base64') });
  assert.equal(info.status, 200, JSON.stringify(info.body));
  assert.equal(info.body.info, JSON.parse(first.body.info).infotexts[0]);
  assert.deepEqual(
    { prompt: info.body.parameters['Prompt'], steps: info.body.parameters['Steps'], cfg: info.body.parameters['CFG scale'], width: info.body.parameters['Size-1'] },
    { prompt: 'a large red circle on the left on a white background :0.7 AND a small blue square on the right on a white background :0.3', steps: '3', cfg: '2', width: '256' },
  );
  assert.deepEqual(info.body.params, {
    prompt: [{ text: 'a large red circle on the left on a white background', weight: 0.7 }, { text: 'a small blue square on the right on a white background', weight: 0.3 }],
    negative_prompt: 'a green background',
    steps: 3,
    guidance: 'full',
    guidance_scale: 2,
    seed: [{ seed: 11, weight: 0.75 }, { seed: 12, weight: 0.25 }],
    width: 256,
    height: 256,
    prompt_blend: 'slerp',
    budget: 0.6,
    expert: 'expert_060',
  });
  // the same parameters through other interfaces: the same file, parameters text included
  const job = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 1, ...info.body.params });
  assert.equal(job.status, 201, JSON.stringify(job.body));
  const done = await waitForJob(server.url, job.body.id);
  assert.ok(Buffer.from(await (await fetch(done.urls[0])).arrayBuffer()).equals(png), 'the job renders the same PNG, byte for byte');
  const again = (await client.images.generate({ ...info.body.params, prompt: info.body.params.prompt } as OpenAI.ImageGenerateParamsNonStreaming)) as OpenAI.ImagesResponse;
  assert.ok(Buffer.from(again.data![0]!.b64_json!, 'base64').equals(png), 'the openai SDK renders the same PNG, byte for byte');
  // JPEG and WebP carry the same text (XMP, and EXIF UserComment when ASCII)
  for (const format of ['jpeg', 'webp'] as const) {
    const out = (await client.images.generate({ ...info.body.params, output_format: format } as OpenAI.ImageGenerateParamsNonStreaming)) as OpenAI.ImagesResponse;
    const read = await postJson(`${server.url}/sdapi/v1/png-info`, { image: out.data![0]!.b64_json! });
    assert.deepEqual(read.body.params, info.body.params, `${format} reads back to the same parameters`);
  }
});

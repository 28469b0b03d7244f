import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdapterStore } from '../../models/adapters/store.ts';
import { parseSafetensors } from '../../models/adapters/safetensors.ts';
import { guidanceEmbedding } from '../../models/components.ts';
import { DEFAULT_PACK_OPTIONS } from '../../models/pack.ts';
import { Engine } from '../../pipelines/engine.ts';
import { img2img, txt2img } from '../../pipelines/generate.ts';
import { packParams, parseParams } from '../../pipelines/params.ts';
import { FAMILIES, FAMILIES_DIR, FAMILY_LORA, type FamilyFixture } from '../helpers/families.ts';

const OPTIONS = { ...DEFAULT_PACK_OPTIONS, threads: 1 };
const engines = new Map<string, Promise<Engine>>();
const engineOf = (f: FamilyFixture) => {
  if (!engines.has(f.name)) engines.set(f.name, Engine.load(f.dir, OPTIONS));
  return engines.get(f.name)!;
};

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** What each pack's files say it is (as the builder wrote it for its export vintage). */
const EXPECTED = {
  sd15: { kind: 'stable-diffusion', ids: 'int32', timestep: { dtype: 'float32', perRow: true }, vae: 'latent_sample', context: 12, pooled: 0, defaults: { steps: 4, guidance: 'self' } },
  'sd-turbo': { kind: 'stable-diffusion', ids: 'int64', timestep: { dtype: 'int64', perRow: true }, vae: 'latent_sample', context: 16, pooled: 0, defaults: { steps: 1, guidance: 'none' } },
  'sdxl-turbo': { kind: 'stable-diffusion-xl', ids: 'int64', timestep: { dtype: 'float32', perRow: false }, vae: 'latent_parameters', context: 12 + 20, pooled: 20, defaults: { steps: 1, guidance: 'none' } },
} as const;

for (const family of FAMILIES) {
  const expected = EXPECTED[family.name];

  test(`${family.name}: loads as ${expected.kind} with its export's contract, size multiple and defaults`, async () => {
    const engine = await engineOf(family);
    const { pack } = engine;
    assert.equal(pack.kind.name, expected.kind);
    assert.equal(pack.prompts.towers.length, expected.kind === 'stable-diffusion-xl' ? 2 : 1);
    assert.equal(pack.textEncoder.idsType, expected.ids);
    assert.deepEqual(pack.unet.timestep, family.fp16 && expected.timestep.dtype === 'float32' ? { ...expected.timestep, dtype: 'float16' } : expected.timestep);
    assert.equal(pack.unet.model.input('sample')!.dtype, family.fp16 ? 'float16' : 'float32');
    assert.equal(pack.unet.pooledSize, expected.pooled);
    assert.equal(pack.vaeEncoder!.outputName, expected.vae);
    assert.equal(pack.sizeMultiple, family.multiple);
    assert.equal(pack.defaultImageSize, 512);
    assert.equal(packParams(pack.defaults, 'txt2img').steps, expected.defaults.steps);
    assert.equal(packParams(pack.defaults, 'txt2img').guidance, expected.defaults.guidance);
    const encoded = await engine.encodePrompt(parseParams({ prompt: 'a photo of a cat' }));
    assert.equal(encoded.cond.length, 77 * expected.context, 'the UNet context is the towers side by side');
    assert.throws(() => engine.size({ width: family.multiple + 8, height: family.multiple }), /multiple of/);
  });

  test(`${family.name}: txt2img and img2img with the pack's defaults at a non-square size, repeatable`, async () => {
    const engine = await engineOf(family);
    const height = Math.max(64, family.multiple);
    const width = height + family.multiple; // not square, and the smallest step the UNet allows
    const params = parseParams({ prompt: 'a red fox in the snow', width, height, seed: 3 }, packParams(engine.pack.defaults, 'txt2img'));
    assert.equal(params.steps, expected.defaults.steps);
    const [image] = await txt2img(engine, params, 1);
    assert.equal(image!.width, width);
    assert.equal(image!.height, height);
    assert.equal(image!.data.length, 3 * image!.width * image!.height);
    assert.ok(image!.data.every(Number.isFinite));
    const [again] = await txt2img(engine, params, 1);
    assert.deepEqual(again!.data, image!.data);
    const edit = parseParams({ ...params, strength: 0.6 }, packParams(engine.pack.defaults, 'img2img'));
    const [edited] = await img2img(engine, edit, [image!.data]);
    const [editedAgain] = await img2img(engine, edit, [image!.data]);
    assert.ok(edited!.data.every(Number.isFinite));
    assert.ok(maxAbsDiff(edited!.data, image!.data) > 1e-3, 'the edit changed the image');
    // a VAE encoder exported with a posterior draw (latent_sample) is loaded with the draw's scale at 0
    assert.deepEqual(editedAgain!.data, edited!.data, 'img2img is repeatable');
  });

  test(`${family.name}: the kohya LoRA merged into the ONNX UNet and text encoder(s) equals torch with the LoRA merged`, async () => {
    const engine = await engineOf(family);
    const ref = parseSafetensors(readFileSync(family.reference));
    const t = (name: string) => {
      const tensor = ref.tensors.get(name);
      assert.ok(tensor, `reference has ${name}`);
      return tensor.data;
    };
    const weight = Number(ref.metadata['weight']);
    const tolerance = family.fp16 ? 0.01 : 1e-4; // of the LoRA's own effect; fp16 graphs compute in half precision
    const store = new AdapterStore(
      join(family.dir, 'adapters'),
      { unet: join(family.dir, 'unet', 'model.onnx'), textEncoders: engine.pack.kind.towers.map((tw) => ({ path: join(family.dir, tw.encoder, 'model.onnx'), layer: tw.layer })) },
      engine.pack.sessions,
    );
    const merged = await store.merged([{ name: FAMILY_LORA, weight }]);
    assert.deepEqual(merged.warnings, []);
    const check = (what: string, base: Float32Array, lora: Float32Array, key: string) => {
      const effect = maxAbsDiff(t(`${key}.base`), t(`${key}.lora`));
      assert.ok(effect > 0.1, `${what}: the LoRA changes torch's output (${effect})`);
      const baseError = maxAbsDiff(base, t(`${key}.base`));
      const loraError = maxAbsDiff(lora, t(`${key}.lora`));
      assert.ok(baseError <= tolerance * effect, `${what}: ONNX without the LoRA is torch's output (error ${baseError}, LoRA effect ${effect})`);
      assert.ok(loraError <= tolerance * effect, `${what}: merged ONNX is torch with the LoRA merged (error ${loraError}, LoRA effect ${effect})`);
    };
    // 1. UNet on the reference inputs
    const row = {
      sample: t('unet.sample'),
      timestep: t('unet.timestep')[0]!,
      context: t('unet.encoder_hidden_states'),
      ...(engine.pack.unet.pooledSize > 0 ? { pooled: t('unet.text_embeds'), timeIds: t('unet.time_ids') } : {}),
    };
    const [base] = await engine.pack.unet.predict([row], 8, 8);
    const [lora] = await merged.unet.predict([row], 8, 8);
    check('unet', base!, lora!, 'unet.out_sample');
    // 2. each text encoder on the reference tokens
    const ids = Int32Array.from(t('text.input_ids'));
    for (const [i, tower] of engine.pack.kind.towers.entries()) {
      const mergedEncoder = merged.text?.encoders[i];
      assert.ok(mergedEncoder, `${tower.encoder} was merged`);
      const [b] = await engine.pack.prompts.towers[i]!.encoder.encode([ids]);
      const [l] = await mergedEncoder.encode([ids]);
      const hidden = tower.layer === 'last' ? 'last_hidden_state' : 'penultimate';
      check(`${tower.encoder} ${hidden}`, b!.hidden, l!.hidden, `${tower.encoder}.${hidden}`);
      check(`${tower.encoder} pooled`, b!.pooled, l!.pooled, `${tower.encoder}.pooled`);
    }
    await Promise.all([merged.unet.model, ...(merged.text?.encoders ?? []).map((e) => e?.model)].map((m) => m?.release()));
  });
}

const SDXL = FAMILIES.find((f) => f.name === 'sdxl-turbo')!;

test('sdxl-turbo: time_ids default to the render size with no crop; an empty negative prompt is zeros (force_zeros_for_empty_prompt)', async () => {
  const engine = await engineOf(SDXL);
  const { unet } = engine.pack;
  const prompt = await engine.encodePrompt(parseParams({ prompt: 'a lighthouse at dusk' }));
  const row = { sample: new Float32Array(4 * 8 * 8).fill(0.3), timestep: 999, context: prompt.cond, pooled: prompt.pooled };
  const at = (timeIds?: number[]) => unet.predict([{ ...row, ...(timeIds ? { timeIds: Float32Array.from(timeIds) } : {}) }], 8, 8).then((r) => r[0]!);
  const implicit = await at();
  assert.deepEqual(await at([64, 64, 0, 0, 64, 64]), implicit, '8x8 latents are a 64x64 render');
  assert.ok(maxAbsDiff(await at([1024, 1024, 0, 0, 64, 64]), implicit) > 1e-4, 'the original size is conditioning');
  assert.ok(maxAbsDiff(await at([64, 64, 16, 0, 64, 64]), implicit) > 1e-4, 'the crop is conditioning');
  assert.ok(prompt.uncond.every((v) => v === 0) && prompt.uncondPooled!.every((v) => v === 0));
  const negative = await engine.encodePrompt(parseParams({ prompt: 'a lighthouse at dusk', negative_prompt: 'fog' }));
  assert.ok(negative.uncond.some((v) => v !== 0));
});

test('a prompt longer than the 77-token window is cut and the cut is reported', async () => {
  const engine = await engineOf(FAMILIES[0]!);
  const long = Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ');
  const prepared = await engine.prepare(parseParams({ prompt: long, negative_prompt: 'blurry' }));
  assert.equal(prepared.prompt.warnings.length, 1);
  assert.match(prepared.prompt.warnings[0]!, /^prompt is \d+ tokens long; the text encoder reads the first 75 .* the last \d+ are ignored$/);
  const short = await engine.prepare(parseParams({ prompt: 'word1 word2' }));
  assert.deepEqual(short.prompt.warnings, []);
});

test("an LCM-distilled UNet's guidance embedding is diffusers' get_guidance_scale_embedding of w = guidance_scale", () => {
  assert.deepEqual([...guidanceEmbedding(1, 4)], [0, 0, 1, 1]);
  const e = guidanceEmbedding(2, 4); // w - 1 = 1 -> 1000 * [1, 1e-4]
  const want = [Math.sin(1000), Math.sin(0.1), Math.cos(1000), Math.cos(0.1)];
  e.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6, `${i}: ${v} vs ${want[i]}`));
});

test('an LCM-distilled UNet (optimum 1.23, fp16, timestep_cond): defaults none / 8, and guidance_scale is its guidance embedding', async () => {
  // the SD 1.5 pack with its UNet replaced by an LCM-distilled one of the same width (models/train/families/build.py
  // --lcm-distilled --vintage optimum-1.23 --fp16), as LCM_Dreamshaper_v7 exports are laid out
  const dir = await mkdtemp(join(tmpdir(), 'lcm-'));
  await cp(FAMILIES[0]!.dir, dir, { recursive: true });
  await rm(join(dir, 'unet'), { recursive: true });
  await cp(join(FAMILIES_DIR, 'sd15-lcm-unet'), join(dir, 'unet'), { recursive: true });
  const engine = await Engine.load(dir, OPTIONS);
  assert.equal(engine.pack.unet.guidanceEmbeddingSize, 256);
  assert.deepEqual(engine.pack.unet.timestep, { dtype: 'int64', perRow: true });
  const params = parseParams({ prompt: 'a lighthouse', width: 64, height: 64, seed: 1 }, packParams(engine.pack.defaults, 'txt2img'));
  assert.equal(params.guidance, 'none');
  assert.equal(params.guidance_scale, 8);
  const [w8] = await txt2img(engine, params, 1);
  const [w3] = await txt2img(engine, { ...params, guidance_scale: 3 }, 1);
  assert.ok(w8!.data.every(Number.isFinite));
  assert.ok(maxAbsDiff(w8!.data, w3!.data) > 1e-3, 'the guidance scale reaches the UNet');
});

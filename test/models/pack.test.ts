import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EMBEDDED_PACK_DIR, loadPack } from '../../models/pack.ts';
import { packDefaults } from '../../models/pack-kinds.ts';
import { ServiceError } from '../../models/errors.ts';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { img2img, txt2img } from '../../pipelines/generate.ts';
import { CONTRACTS, CONTRACT_VARIANTS, copyPack, BASE_PACK } from '../helpers/fixtures.ts';
import { DEFAULT_PACK_OPTIONS } from '../../models/pack.ts';

const expectedContracts: Record<string, (e: Engine) => void> = {
  base: (e) => {
    assert.deepEqual(e.pack.unet.timestep, { dtype: 'float32', perRow: true });
    assert.equal(e.pack.textEncoder.idsType, 'int32');
  },
  'int64-timestep': (e) => assert.deepEqual(e.pack.unet.timestep, { dtype: 'int64', perRow: true }),
  'scalar-timestep': (e) => assert.deepEqual(e.pack.unet.timestep, { dtype: 'float32', perRow: false }),
  fp16: (e) => assert.equal(e.pack.unet.model.input('sample')!.dtype, 'float16'),
  'latent-parameters': (e) => assert.equal(e.pack.vaeEncoder!.outputsParameters, true),
  'int64-ids': (e) => assert.equal(e.pack.textEncoder.idsType, 'int64'),
  // the UNet's weights sit in unet/model.onnx_data beside the graph (large exports do this)
  'external-data': (e) => assert.equal(e.pack.unet.timestep.perRow, true),
};

for (const variant of CONTRACT_VARIANTS) {
  test(`contract variant ${variant}: loads, reads its contract from metadata, runs txt2img and img2img at a non-square size`, async () => {
    const engine = await Engine.load(join(CONTRACTS, variant));
    expectedContracts[variant]!(engine);
    const params = parseParams({ prompt: 'a red circle', width: 128, height: 96, steps: 2, guidance: 'full', guidance_scale: 1.5 });
    const [image] = await txt2img(engine, params, 1);
    assert.equal(image!.width, 128);
    assert.equal(image!.height, 96);
    assert.equal(image!.data.length, 3 * 128 * 96);
    assert.ok(image!.data.every(Number.isFinite));
    const [edited] = await img2img(engine, { ...params, strength: 0.6 }, [image!.data]);
    assert.equal(edited!.data.length, 3 * 128 * 96);
    assert.ok(edited!.data.every(Number.isFinite));
  });
}

test('a missing model file names the component', async () => {
  const dir = await copyPack();
  await rm(join(dir, 'unet', 'model.onnx'));
  await assert.rejects(loadPack(dir), (e: ServiceError) => e.code === 'model_invalid' && /missing unet\/model\.onnx/.test(e.message));
});

test('a folder missing model_index.json, or with a broken one, is a clear error', async () => {
  const dir = await copyPack();
  await writeFile(join(dir, 'model_index.json'), '{ not json');
  await assert.rejects(loadPack(dir), /model_index\.json is not valid JSON/);
  await rm(join(dir, 'model_index.json'));
  await assert.rejects(loadPack(dir), /model_index\.json is missing/);
  await assert.rejects(loadPack(join(dir, 'nope')), /does not exist/);
});

test('a corrupt ONNX file is a load error naming the component', async () => {
  const dir = await copyPack();
  await writeFile(join(dir, 'vae_decoder', 'model.onnx'), Buffer.from('this is not a protobuf'));
  await assert.rejects(loadPack(dir), (e: ServiceError) => e.code === 'model_invalid' && e.message.startsWith('vae_decoder'));
});

test('an execution provider this build lacks is named in the error', async () => {
  await assert.rejects(loadPack(BASE_PACK, { ...DEFAULT_PACK_OPTIONS, provider: 'coreml' }), (e: ServiceError) => e.code === 'unsupported' && /"coreml" is not available/.test(e.message));
});

test('a size the UNet cannot take is rejected with the field named', async () => {
  const engine = await Engine.load(BASE_PACK);
  assert.throws(() => engine.size({ width: 120, height: 128 }), (e: ServiceError) => e.field === 'width' && e.message.includes(`multiple of ${engine.pack.sizeMultiple}`));
});

test('a UNet with external weight data gives the same image as the same weights inline', async () => {
  const params = parseParams({ prompt: 'a blue circle', steps: 2, seed: 4 });
  const [inline] = await txt2img(await Engine.load(BASE_PACK), params, 1);
  const [external] = await txt2img(await Engine.load(join(CONTRACTS, 'external-data')), params, 1);
  assert.deepEqual(external!.data, inline!.data);
});

test('a tiny VAE (taesd_encoder/taesd_decoder) is loaded beside the full one, with scale factor 1', async () => {
  const dir = await copyPack();
  const { cp } = await import('node:fs/promises');
  await cp(join(dir, 'vae_encoder'), join(dir, 'taesd_encoder'), { recursive: true });
  await cp(join(dir, 'vae_decoder'), join(dir, 'taesd_decoder'), { recursive: true });
  await writeFile(join(dir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 0.18215 }));
  const pack = await loadPack(dir);
  assert.equal(pack.vaeDecoder.scalingFactor, 0.18215);
  assert.equal(pack.vaeDecoder.model.label, 'vae_decoder');
  assert.equal(pack.tinyVae!.decoder.scalingFactor, 1);
  assert.equal(pack.tinyVae!.encoder!.scalingFactor, 1);
  assert.equal(pack.tinyVae!.decoder.model.label, 'taesd_decoder');
  assert.equal(pack.tinyVae!.encoder!.model.label, 'taesd_encoder');
  assert.equal((await loadPack(BASE_PACK)).tinyVae, undefined);
});

test('the pack kind comes from model_index.json; an SDXL pack without its second text encoder names what is missing', async () => {
  assert.equal((await loadPack(BASE_PACK)).kind.name, 'stable-diffusion');
  const dir = await copyPack();
  await writeFile(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'ORTStableDiffusionXLPipeline' }));
  await assert.rejects(loadPack(dir), (e: ServiceError) => e.code === 'model_invalid' && /missing text_encoder_2\/model\.onnx/.test(e.message));
});

test('every missing required component is named at once', async () => {
  const dir = await copyPack();
  await rm(join(dir, 'unet', 'model.onnx'));
  await rm(join(dir, 'text_encoder', 'model.onnx'));
  await assert.rejects(loadPack(dir), /missing text_encoder\/model\.onnx, unet\/model\.onnx/);
});

test('a pack\'s recommended ranges: defaults from its training size, overridden by model_index.json\'s streamdiffusion object', async () => {
  assert.deepEqual(packDefaults({}, 512), { guidance_range: [1, 2], size_range: [256, 1024] });
  assert.deepEqual(packDefaults({ streamdiffusion: { guidance_range: [1, 3] } }, 128), { guidance_range: [1, 3], size_range: [64, 256] });
  assert.deepEqual((await loadPack(EMBEDDED_PACK_DIR)).defaults, { guidance_range: [1, 2], size_range: [128, 160] }, 'tiny-shapes declares its own');
  const bad = (override: unknown, field: string) =>
    assert.throws(() => packDefaults({ streamdiffusion: override }, 128), (e: unknown) => e instanceof ServiceError && e.code === 'model_invalid' && e.field === field);
  bad([1, 2], 'streamdiffusion');
  bad({ guidance_range: [3, 1] }, 'streamdiffusion.guidance_range');
  bad({ size_range: [64] }, 'streamdiffusion.size_range');
  bad({ guidance_rnage: [1, 2] }, 'streamdiffusion.guidance_rnage');
  const dir = await copyPack();
  const index = JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'model_index.json'), JSON.stringify({ ...index, streamdiffusion: { size_range: 'big' } }));
  await assert.rejects(loadPack(dir), /model_index\.json: streamdiffusion\.size_range must be \[min, max\]/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { OnnxModel, ortSessionOptions, parseProvider } from '../../../models/runtime/onnx.ts';
import { ServiceError } from '../../../models/errors.ts';
import { BASE_PACK, FIXTURES } from '../../helpers/fixtures.ts';

test('a GPU-only operator is named in a clear error', async () => {
  await assert.rejects(
    OnnxModel.load(join(FIXTURES, 'gpu-only', 'model.onnx'), { provider: 'cpu', threads: 0, label: 'unet' }),
    (e: ServiceError) => e.code === 'unsupported' && /operator NhwcConv has no kernel/.test(e.message),
  );
});

test('feeds are checked against the contract before a run; the error lists names, dtypes and dims', async () => {
  const model = await OnnxModel.load(join(BASE_PACK, 'vae_decoder', 'model.onnx'), { provider: 'cpu', threads: 0, label: 'vae_decoder' });
  await assert.rejects(
    model.run({ latent_sample: { data: new Float32Array(4 * 4 * 4), dims: [1, 4, 4] } }),
    (e: ServiceError) => e.code === 'inference_failed' && /rank 3, the model expects 4/.test(e.message) && /Model inputs: latent_sample float32/.test(e.message),
  );
  await assert.rejects(model.run({ latent_sample: { data: new Int32Array(64), dims: [1, 4, 4, 4] } }), /integer data, the model expects float32/);
  await assert.rejects(model.run({ nope: { data: new Float32Array(1), dims: [1] } }), /missing input latent_sample; unexpected input nope/);
});

test('unknown providers are rejected by name', () => {
  assert.throws(() => parseProvider('quantum'), /unknown execution provider "quantum"/);
});

test('sessions are opened with spinning off (idle intra-op threads sleep) and the threads asked for', () => {
  const options = ortSessionOptions({ provider: 'cpu', threads: 3, label: 'unet' });
  assert.deepEqual(options.extra, { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
  assert.equal(options.intraOpNumThreads, 3);
  assert.equal(ortSessionOptions({ provider: 'cpu', threads: 0, label: 'unet' }).intraOpNumThreads, undefined, '0: onnxruntime decides');
});

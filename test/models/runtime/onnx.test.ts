import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { OnnxModel, ortSessionOptions, parseProvider } from '../../../models/runtime/onnx.ts';
import { ServiceError } from '../../../models/errors.ts';
import { BASE_PACK, FIXTURES } from '../../helpers/fixtures.ts';

const require = createRequire(import.meta.url);

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

test('--provider cuda without onnxruntime-node\'s CUDA binaries says how to install them; with them the model loads', async () => {
  const unet = join(BASE_PACK, 'unet', 'model.onnx');
  const cudaLibrary = join(dirname(require.resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime_providers_cuda.so');
  if (process.platform === 'linux' && process.arch === 'x64' && !existsSync(cudaLibrary)) {
    await assert.rejects(
      OnnxModel.load(unet, { provider: 'cuda', threads: 1, label: 'unet' }),
      (e: ServiceError) => e.code === 'unsupported' && /execution provider "cuda" is not installed: .*ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node/.test(e.message),
    );
  } else {
    const model = await OnnxModel.load(unet, { provider: 'cuda', threads: 1, label: 'unet' }).catch((e: ServiceError) => e);
    // with the binaries but no usable GPU, onnxruntime's own error is passed on; with a GPU the model loads
    assert.ok(model instanceof OnnxModel || (model instanceof ServiceError && !/is not installed/.test(model.message)));
  }
});

test('sessions are opened with spinning off (idle intra-op threads sleep) and the threads asked for', () => {
  const options = ortSessionOptions({ provider: 'cpu', threads: 3, label: 'unet' });
  assert.deepEqual(options.extra, { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
  assert.equal(options.intraOpNumThreads, 3);
  assert.equal(ortSessionOptions({ provider: 'cpu', threads: 0, label: 'unet' }).intraOpNumThreads, undefined, '0: onnxruntime decides');
  assert.deepEqual(
    ortSessionOptions({ provider: 'cpu', threads: 1, label: 'unet', externalDataDir: '/packs/x/unet' }).extra,
    { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' }, model_external_initializers_file_folder_path: '/packs/x/unet' } },
    'a model given as bytes finds its external data in its folder',
  );
});

/** Where a pack's networks run (models/sessions.ts): the stages of a frame on different workers, threads from the cores. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { placement } from '../../models/sessions.ts';
import { Engine } from '../../pipelines/engine.ts';
import type { WorkerModel } from '../../models/runtime/worker-pool.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';

test('two workers: the UNet and the VAE decoder on one, the text encoder and the VAE encoder on the other, one thread each', () => {
  const at = (role: Parameters<typeof placement>[0]) => placement(role, 2, 2, 0);
  assert.deepEqual(at('unet'), { workers: [0], threads: 1 });
  assert.deepEqual(at('vae_decoder'), { workers: [0], threads: 1 });
  assert.deepEqual(at('vae_encoder'), { workers: [1], threads: 1 });
  assert.deepEqual(at('text_encoder'), { workers: [1], threads: 1 });
  // more workers repeat the groups; threads split the cores; an explicit thread count wins; one worker holds all
  assert.deepEqual(placement('unet', 4, 16, 0), { workers: [0, 2], threads: 4 });
  assert.deepEqual(placement('vae_encoder', 4, 16, 0), { workers: [1, 3], threads: 4 });
  assert.deepEqual(placement('unet', 2, 2, 3), { workers: [0], threads: 3 });
  assert.deepEqual(placement('vae_encoder', 1, 2, 0), { workers: [0], threads: 2 });
});

test("a pack's sessions go where their roles say; workers: 0 keeps them on the calling thread", async () => {
  const engine = await Engine.load(BASE_PACK, { provider: 'cpu', threads: 0, workers: 2 });
  const workersOf = (m: unknown) => (m as WorkerModel).workers.map((w) => w.name);
  assert.deepEqual(workersOf(engine.pack.unet.model), ['onnx-0']);
  assert.deepEqual(workersOf(engine.pack.vaeDecoder.model), ['onnx-0']);
  assert.deepEqual(workersOf(engine.pack.vaeEncoder!.model), ['onnx-1']);
  assert.deepEqual(workersOf(engine.pack.textEncoder.model), ['onnx-1']);
  await engine.close();
  const inThread = await Engine.load(BASE_PACK, { provider: 'cpu', threads: 1, workers: 0 });
  assert.equal((inThread.pack.unet.model as Partial<WorkerModel>).workers, undefined);
  assert.equal(inThread.pack.sessions.workerCount, 0);
});

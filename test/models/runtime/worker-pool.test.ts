/**
 * Sessions on worker threads (models/runtime/worker-pool.ts): the same results as a session on this thread, the
 * event loop free while a model runs, image bytes converted where the session runs, kept feeds, spinning off,
 * and processes that end cleanly (naturally, or with process.exit after close()).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { OnnxModel } from '../../../models/runtime/onnx.ts';
import { readdirSync, readFileSync } from 'node:fs';
import { WORKER_NICE, WorkerPool } from '../../../models/runtime/worker-pool.ts';
import { planarToRgb8, rgb8ToPlanar } from '../../../models/runtime/image-layout.ts';
import { ServiceError } from '../../../models/errors.ts';
import { Generator } from '../../../pipelines/random.ts';
import { BASE_PACK } from '../../helpers/fixtures.ts';

const DECODER = join(BASE_PACK, 'vae_decoder', 'model.onnx');
const ENCODER = join(BASE_PACK, 'vae_encoder', 'model.onnx');
const UNET = join(BASE_PACK, 'unet', 'model.onnx');
const options = (label: string, threads = 1) => ({ provider: 'cpu' as const, threads, label });
const pool = new WorkerPool(2);
const random = (n: number, seed: number) => {
  const g = new Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal());
};

test('a model on a worker gives exactly what the same model gives on this thread', async () => {
  const [remote, local] = await Promise.all([pool.load(DECODER, options('vae_decoder'), [0]), OnnxModel.load(DECODER, options('vae_decoder'))]);
  assert.deepEqual(remote.inputs, local.inputs);
  const feeds = { latent_sample: { data: random(2 * 4 * 16 * 16, 1), dims: [2, 4, 16, 16] } };
  const [a, b] = await Promise.all([remote.run(feeds), local.run(feeds)]);
  assert.deepEqual(a['sample']!.dims, [2, 3, 128, 128]);
  assert.deepEqual(a['sample']!.data, b['sample']!.data);
  // a bad feed fails before it reaches the worker, with the contract in the message
  await assert.rejects(remote.run({ latent_sample: { data: new Float32Array(4), dims: [1, 4] } }), (e: ServiceError) => e.code === 'inference_failed' && /rank 2, the model expects 4/.test(e.message));
});

test('image bytes in and out are converted where the session runs, exactly as the float path does', async () => {
  const [encoder, decoder] = await Promise.all([pool.load(ENCODER, options('vae_encoder'), [1]), pool.load(DECODER, options('vae_decoder'), [0])]);
  const g = new Generator(2);
  const rgb = Uint8Array.from({ length: 2 * 128 * 128 * 3 }, () => Math.floor(g.uniform() * 256));
  const viaBytes = await encoder.run({ sample: { data: rgb, dims: [2, 128, 128, 3], layout: 'rgb8' } });
  const viaFloats = await encoder.run({ sample: { data: rgb8ToPlanar(rgb, 2, 128, 128), dims: [2, 3, 128, 128] } });
  assert.deepEqual(viaBytes, viaFloats);
  const latents = { latent_sample: { data: random(2 * 4 * 16 * 16, 3), dims: [2, 4, 16, 16] } };
  const bytes = await decoder.runRgb8(latents, 'sample');
  const floats = (await decoder.run(latents))['sample']!;
  assert.deepEqual(bytes.dims, [2, 128, 128, 3]);
  assert.deepEqual(bytes.data, planarToRgb8(floats.data, 2, 128, 128));
});

test('the event loop keeps turning while a model runs on a worker (it stops while one runs on this thread)', async () => {
  const feeds = { sample: { data: random(8 * 4 * 32 * 32, 4), dims: [8, 4, 32, 32] }, timestep: { data: new Float32Array(8).fill(500), dims: [8] }, encoder_hidden_states: { data: random(8 * 77 * 8, 5), dims: [8, 77, 8] } };
  const turns = async (run: () => Promise<unknown>): Promise<number> => {
    let n = 0;
    let done = false;
    const spin = () => {
      n++;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    await run();
    done = true;
    return n;
  };
  const [remote, local] = await Promise.all([pool.load(UNET, options('unet'), [0]), OnnxModel.load(UNET, options('unet'))]);
  await remote.run(feeds); // warm both
  await local.run(feeds);
  const onWorker = await turns(async () => {
    for (let i = 0; i < 5; i++) await remote.run(feeds);
  });
  const onThread = await turns(async () => {
    for (let i = 0; i < 5; i++) await local.run(feeds);
  });
  // on this thread each run is one blocking native call: a couple of turns per run at most
  assert.ok(onThread <= 15, `${onThread} turns while the models ran on this thread`);
  assert.ok(onWorker > 10 * onThread, `${onWorker} turns while the models ran on a worker, ${onThread} on this thread`);
});

test('a kept feed is sent once and still right after it is dropped from the worker and sent again', async () => {
  const unet = await pool.load(UNET, options('unet'), [0]);
  const sample = { data: random(4 * 8 * 8, 6), dims: [1, 4, 8, 8] };
  const timestep = { data: Float32Array.of(300), dims: [1] };
  const context = (seed: number) => ({ data: random(77 * 8, seed), dims: [1, 77, 8] });
  const expected = (await unet.run({ sample, timestep, encoder_hidden_states: context(100) }))['out_sample']!.data;
  const kept = { ...context(100), keep: 'ctx-100' };
  assert.deepEqual((await unet.run({ sample, timestep, encoder_hidden_states: kept }))['out_sample']!.data, expected);
  // the second call sends only the key: a wrong payload under the same key is not even looked at
  const wrong = { ...context(7), keep: 'ctx-100' };
  assert.deepEqual((await unet.run({ sample, timestep, encoder_hidden_states: wrong }))['out_sample']!.data, expected);
  // 64 other kept feeds push it out of the worker; then its data travels again
  for (let i = 0; i < 64; i++) await unet.run({ sample, timestep, encoder_hidden_states: { ...context(i), keep: `other-${i}` } });
  const again = (await unet.run({ sample, timestep, encoder_hidden_states: { ...context(100), keep: 'ctx-100' } }))['out_sample']!.data;
  assert.deepEqual(again, expected);
});

test('a model on two workers: calls go to the least busy, and both give the same results', async () => {
  const decoder = await pool.load(DECODER, options('vae_decoder'), [0, 1]);
  assert.equal(decoder.workers.length, 2);
  const feeds = Array.from({ length: 6 }, (_, i) => ({ latent_sample: { data: random(4 * 16 * 16, 10 + i), dims: [1, 4, 16, 16] } }));
  const together = await Promise.all(feeds.map((f) => decoder.run(f)));
  const local = await OnnxModel.load(DECODER, options('vae_decoder'));
  for (const [i, f] of feeds.entries()) assert.deepEqual(together[i]!['sample']!.data, (await local.run(f))['sample']!.data);
});

test('a released model refuses calls; a dedicated worker ends with its last session', async () => {
  const own = await pool.load(DECODER, options('own'), 'own');
  const beside = await pool.load(ENCODER, options('beside'), own.workers[0]!);
  assert.equal(beside.workers[0], own.workers[0]);
  await own.release();
  assert.ok(own.workers[0]!.alive, 'still holds the encoder');
  await assert.rejects(own.run({ latent_sample: { data: new Float32Array(4 * 16 * 16), dims: [1, 4, 16, 16] } }), (e: ServiceError) => e.code === 'unavailable');
  await beside.release();
  assert.equal(own.workers[0]!.alive, false);
});

test('worker threads run at a lower priority than the main thread, so I/O goes first when the cores are busy', { skip: process.platform !== 'linux' && 'nice values per thread are read from /proc' }, async () => {
  const model = await pool.load(DECODER, options('decoder', 2), [0, 1]);
  await model.run({ latent_sample: { data: random(4 * 16 * 16, 20), dims: [1, 4, 16, 16] } });
  const nice = (task: string) => Number(readFileSync(`/proc/self/task/${task}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
  const tasks = readdirSync('/proc/self/task');
  const main = nice(String(process.pid));
  // two workers of this pool, and the intra-op thread each two-thread session started
  assert.ok(WORKER_NICE > 0 && main + WORKER_NICE <= 19);
  assert.ok(tasks.filter((t) => nice(t) === main + WORKER_NICE).length >= 4, `main thread ${main}, threads: ${tasks.map(nice).join(' ')}`);
});

const ROOT = resolve(import.meta.dirname, '..', '..', '..');
const run = promisify(execFile);
const child = (code: string) => run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, timeout: 120_000 });
const LOAD_AND_RUN = `
  import { Engine } from './pipelines/engine.ts';
  import { txt2img } from './pipelines/generate.ts';
  import { parseParams } from './pipelines/params.ts';
  const engine = await Engine.load(${JSON.stringify(BASE_PACK)});
  await txt2img(engine, parseParams({ prompt: 'a red circle', steps: 1 }), 1);
  console.log('rendered');`;

test('a process with sessions on workers ends by itself when its work is done', async () => {
  const { stdout } = await child(LOAD_AND_RUN);
  assert.equal(stdout.trim(), 'rendered');
});

test('process.exit with a model run in flight ends cleanly after the pool is closed (onnxruntime aborts otherwise)', async () => {
  const { stdout } = await child(`
  import { closeSharedPool, sharedPool } from './models/runtime/worker-pool.ts';
  const unet = await sharedPool().load(${JSON.stringify(UNET)}, { provider: 'cpu', threads: 1, label: 'unet' }, [0]);
  const n = 16 * 4 * 32 * 32;
  const feeds = { sample: { data: new Float32Array(n).fill(0.5), dims: [16, 4, 32, 32] }, timestep: { data: new Float32Array(16).fill(500), dims: [16] }, encoder_hidden_states: { data: new Float32Array(16 * 77 * 8), dims: [16, 77, 8] } };
  for (let i = 0; i < 4; i++) void unet.run(feeds).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 20));
  await closeSharedPool();
  console.log('closed');
  process.exit(0);`);
  assert.equal(stdout.trim(), 'closed');
});

test.after(() => pool.close());

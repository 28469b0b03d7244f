// Latency of the exported pack models in onnxruntime-node (2 intra-op threads).
// usage: node models/train/bench_onnx.cjs models/packs/tiny-shapes
const path = require('path');
const ort = require(path.join(__dirname, '..', '..', 'node_modules', 'onnxruntime-node'));
const dir = process.argv[2];
const opt = { intraOpNumThreads: 2, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
const T = (dims) => new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b) }, () => Math.random() - 0.5), dims);
async function time(name, s, feeds, n = 30) {
  for (let i = 0; i < 5; i++) await s.run(feeds);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await s.run(feeds);
  console.log(`${name}: ${((performance.now() - t0) / n).toFixed(2)} ms`);
}
(async () => {
  const te = await ort.InferenceSession.create(path.join(dir, 'text_encoder', 'model.onnx'), opt);
  await time('text_encoder B=1', te, { input_ids: new ort.Tensor('int32', new Int32Array(77).fill(668), [1, 77]) });
  const D = te.outputMetadata[0].shape[2];
  const u = await ort.InferenceSession.create(path.join(dir, 'unet', 'model.onnx'), opt);
  for (const B of [1, 2, 4]) await time(`unet B=${B} 16x16`, u, { sample: T([B, 4, 16, 16]), timestep: new ort.Tensor('float32', new Float32Array(B).fill(999), [B]), encoder_hidden_states: T([B, 77, D]) });
  const e = await ort.InferenceSession.create(path.join(dir, 'vae_encoder', 'model.onnx'), opt);
  await time('vae_encoder 128x128', e, { sample: T([1, 3, 128, 128]) });
  const d = await ort.InferenceSession.create(path.join(dir, 'vae_decoder', 'model.onnx'), opt);
  await time('vae_decoder 128x128', d, { latent_sample: T([1, 4, 16, 16]) });
})();

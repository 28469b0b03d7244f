// Verify a tiny-shapes pack (or contract fixture) with onnxruntime-node.
// usage: node models/train/verify_onnx.cjs <packDir> [<packDir> ...]
// Loads each model, prints input/output metadata, runs it at batch 2 and a
// non-square size (latent 12x16 = image 96x128) and checks output shapes/finiteness.
const path = require('path');
const fs = require('fs');
const ort = require(path.join(__dirname, '..', '..', 'node_modules', 'onnxruntime-node'));

function f16(x) { // float32 -> IEEE half bits
  const f = new Float32Array([x]); const u = new Uint32Array(f.buffer)[0];
  const s = (u >>> 16) & 0x8000; let e = ((u >>> 23) & 0xff) - 127 + 15; let m = u & 0x7fffff;
  if (e <= 0) return s; if (e >= 31) return s | 0x7c00; return s | (e << 10) | (m >>> 13);
}
function tensor(type, dims, fill) {
  const n = dims.reduce((a, b) => a * b, 1);
  if (type === 'float32') return new ort.Tensor('float32', Float32Array.from({ length: n }, (_, i) => fill(i)), dims);
  if (type === 'float16') return new ort.Tensor('float16', Uint16Array.from({ length: n }, (_, i) => f16(fill(i))), dims);
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from({ length: n }, (_, i) => fill(i)), dims);
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(fill(i))), dims);
  throw new Error('type ' + type);
}
function meta(list) { return list.map(m => `${m.name}:${m.type}[${(m.shape || []).join(',')}]`).join(' '); }
function finite(t) { const d = t.data; if (t.type === 'float16') return true; for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return false; return true; }

async function verify(dir) {
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer', 'vocab.json')));
  const eos = vocab['<|endoftext|>'], bos = vocab['<|startoftext|>'];
  const out = {};
  const rnd = (i) => Math.sin(i * 12.9898) * 0.8;
  const B = 2, lh = 12, lw = 16;
  // text encoder
  let s = await ort.InferenceSession.create(path.join(dir, 'text_encoder', 'model.onnx'));
  console.log(`${dir}\n  text_encoder  in: ${meta(s.inputMetadata)}\n                out: ${meta(s.outputMetadata)}`);
  const idsType = s.inputMetadata[0].type;
  const ids = tensor(idsType, [B, 77], (i) => (i % 77 === 0 ? bos : i % 77 < 4 ? 320 + (i % 77) : eos));
  let r = await s.run({ input_ids: ids });
  const hs = r.last_hidden_state; const D = hs.dims[2];
  console.log(`                last_hidden_state ${hs.dims} pooler_output ${r.pooler_output.dims}`);
  if (!finite(hs) || hs.dims[1] !== 77 || r.pooler_output.dims[1] !== D) throw new Error('text encoder output bad');
  // unet
  s = await ort.InferenceSession.create(path.join(dir, 'unet', 'model.onnx'));
  console.log(`  unet          in: ${meta(s.inputMetadata)}\n                out: ${meta(s.outputMetadata)}`);
  const im = Object.fromEntries(s.inputMetadata.map(m => [m.name, m]));
  const ft = im.sample.type;
  const tsShape = im.timestep.shape.length === 0 ? [] : [B];
  const feeds = {
    sample: tensor(ft, [B, 4, lh, lw], rnd),
    timestep: tensor(im.timestep.type, tsShape, (i) => (i === 0 ? 999 : 499)),
    encoder_hidden_states: im.encoder_hidden_states.type === 'float32' ? hs : tensor(im.encoder_hidden_states.type, hs.dims, (i) => hs.data[i]),
  };
  let t0 = performance.now();
  r = await s.run(feeds);
  const ms = performance.now() - t0;
  console.log(`                out_sample ${r.out_sample.type} ${r.out_sample.dims} (${ms.toFixed(1)} ms first run)`);
  if (r.out_sample.dims.join() !== [B, 4, lh, lw].join() || !finite(r.out_sample)) throw new Error('unet output bad');
  // vae encoder
  s = await ort.InferenceSession.create(path.join(dir, 'vae_encoder', 'model.onnx'));
  console.log(`  vae_encoder   in: ${meta(s.inputMetadata)}\n                out: ${meta(s.outputMetadata)}`);
  r = await s.run({ sample: tensor('float32', [B, 3, lh * 8, lw * 8], rnd) });
  const eo = r[s.outputNames[0]];
  console.log(`                ${s.outputNames[0]} ${eo.dims}`);
  if (eo.dims[2] !== lh || eo.dims[3] !== lw) throw new Error('vae encoder output bad');
  // vae decoder
  s = await ort.InferenceSession.create(path.join(dir, 'vae_decoder', 'model.onnx'));
  console.log(`  vae_decoder   in: ${meta(s.inputMetadata)}\n                out: ${meta(s.outputMetadata)}`);
  r = await s.run({ latent_sample: tensor('float32', [B, 4, lh, lw], rnd) });
  console.log(`                sample ${r.sample.dims}`);
  if (r.sample.dims.join() !== [B, 3, lh * 8, lw * 8].join() || !finite(r.sample)) throw new Error('vae decoder output bad');
  console.log('  OK');
}

async function parity(dir, file) {
  // compare onnxruntime outputs with the torch reference written by evaluate.py
  const p = JSON.parse(fs.readFileSync(file));
  const maxdiff = (a, b) => { let m = 0; for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
  let s = await ort.InferenceSession.create(path.join(dir, 'text_encoder', 'model.onnx'));
  let r = await s.run({ input_ids: new ort.Tensor('int32', Int32Array.from(p.input_ids), [1, 77]) });
  const hs = r.last_hidden_state;
  const d1 = maxdiff(r.pooler_output.data, p.pooler_output);
  s = await ort.InferenceSession.create(path.join(dir, 'unet', 'model.onnx'));
  r = await s.run({ sample: new ort.Tensor('float32', Float32Array.from(p.sample), p.sample_dims),
    timestep: new ort.Tensor('float32', Float32Array.from([p.timestep]), [1]), encoder_hidden_states: hs });
  const d2 = maxdiff(r.out_sample.data, p.out_sample);
  s = await ort.InferenceSession.create(path.join(dir, 'vae_decoder', 'model.onnx'));
  r = await s.run({ latent_sample: new ort.Tensor('float32', Float32Array.from(p.sample), p.sample_dims) });
  const d3 = maxdiff(r.sample.data.slice(0, 64), p.decoder_out_first64);
  s = await ort.InferenceSession.create(path.join(dir, 'vae_encoder', 'model.onnx'));
  r = await s.run({ sample: new ort.Tensor('float32', Float32Array.from(p.encoder_in), p.encoder_in_dims) });
  const d4 = maxdiff(r[s.outputNames[0]].data, p.encoder_out);
  console.log(`parity ${dir}: pooler ${d1.toExponential(2)} unet ${d2.toExponential(2)} decoder ${d3.toExponential(2)} encoder ${d4.toExponential(2)}`);
  if (Math.max(d1, d2, d3, d4) > 1e-3) throw new Error('parity failed');
}

(async () => {
  const args = process.argv.slice(2);
  const pi = args.indexOf('--parity');
  let pfile = null;
  if (pi >= 0) { pfile = args[pi + 1]; args.splice(pi, 2); }
  for (const d of args) await verify(d);
  if (pfile) await parity(args[0], pfile);
})().catch((e) => { console.error(e); process.exit(1); });

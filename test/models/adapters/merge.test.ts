import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { kohyaKeyOfModule, kohyaKeyOfNode, kohyaNodeTable, readKohyaAdapter } from '../../../models/adapters/kohya.ts';
import { matchAdapter, mergeAdapters, overlapWarnings, type WeightedAdapter } from '../../../models/adapters/merge.ts';
import { indexOnnxModel, type OnnxGraphIndex } from '../../../models/adapters/onnx-graph.ts';
import { encodeSafetensors, parseSafetensors } from '../../../models/adapters/safetensors.ts';
import { ServiceError } from '../../../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { OnnxModel } from '../../../models/runtime/onnx.ts';
import { Generator } from '../../../pipelines/random.ts';
import { BASE_PACK, FIXTURES } from '../../helpers/fixtures.ts';

const ADAPTERS = join(FIXTURES, 'adapters');
const baseBytes = new Uint8Array(readFileSync(join(BASE_PACK, 'unet', 'model.onnx')));
const index = indexOnnxModel(baseBytes);
const adapter = (name: string) => readKohyaAdapter(parseSafetensors(readFileSync(join(ADAPTERS, `${name}.safetensors`)), name), name);
const weighted = (name: string, weight: number): WeightedAdapter => ({ name, weight, adapter: adapter(name) });
/** The 12 Linear layers of every transformer block (what the tiny-shapes adapters target). */
const TRANSFORMER_LINEAR = /\/attentions\.\d+\/(proj_in|proj_out|transformer_blocks\.\d+\/(attn[12]\/(to_q|to_k|to_v|to_out\.0)|ff\/net\.(0\/proj|2)))\/MatMul$/;

function values(bytes: Uint8Array, idx: OnnxGraphIndex, name: string): Float64Array {
  const init = idx.initializers.get(name)!;
  const view = new DataView(bytes.buffer, bytes.byteOffset + init.offset, init.length);
  return Float64Array.from({ length: init.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

test('kohya keys <-> ONNX node names (REFERENCE §4)', () => {
  assert.equal(kohyaKeyOfNode({ name: '/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul', opType: 'MatMul' }), 'lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q');
  assert.equal(kohyaKeyOfNode({ name: '/up_blocks.0/attentions.1/transformer_blocks.0/attn2/to_out.0/MatMul', opType: 'MatMul' }), 'lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0');
  assert.equal(kohyaKeyOfNode({ name: '/conv_in/Conv', opType: 'Conv' }), 'lora_unet_conv_in');
  assert.equal(kohyaKeyOfNode({ name: '/time_embedding/linear_1/Gemm', opType: 'Gemm' }), 'lora_unet_time_embedding_linear_1');
  assert.equal(kohyaKeyOfNode({ name: '/mid_block/attentions.0/transformer_blocks.0/attn1/MatMul_1', opType: 'MatMul' }), undefined);
  assert.equal(kohyaKeyOfNode({ name: '/conv_in/Add', opType: 'Add' }), undefined);
  assert.equal(kohyaKeyOfModule('mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj'), 'lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj');
});

test('fixture UNet: every transformer Linear has a key whose weight is an [in, out] initializer; every fixture adapter key matches', () => {
  const table = kohyaNodeTable(index);
  const linear = index.nodes.filter((n) => TRANSFORMER_LINEAR.test(n.name));
  assert.equal(linear.length, 48); // 12 layers x 4 transformer blocks in the fixture architecture
  for (const node of linear) {
    assert.equal(table.get(kohyaKeyOfNode(node)!), node);
    assert.equal(index.initializers.get(node.inputs[1]!)?.dims.length, 2, node.name);
  }
  for (const name of ['fixture-a', 'fixture-b', 'fixture-c']) {
    assert.deepEqual(matchAdapter(index, adapter(name), name), { matched: 50, unmatched: [] });
  }
});

const PACK_UNET = join(EMBEDDED_PACK_DIR, 'unet', 'model.onnx');
test('tiny-shapes pack: every transformer Linear maps, and every shipped adapter key matches a node', { skip: !existsSync(PACK_UNET) && 'pack not exported yet' }, () => {
  const packIndex = indexOnnxModel(new Uint8Array(readFileSync(PACK_UNET)));
  const table = kohyaNodeTable(packIndex);
  const linear = packIndex.nodes.filter((n) => TRANSFORMER_LINEAR.test(n.name));
  assert.equal(linear.length, 84); // 12 layers x 7 transformer blocks
  for (const node of linear) assert.equal(table.get(kohyaKeyOfNode(node)!), node);
  const dir = join(EMBEDDED_PACK_DIR, 'adapters');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.safetensors') && !f.startsWith('orthogonal-basis')) : [];
  const orthogonal: WeightedAdapter[] = [];
  for (const f of files) {
    const a = readKohyaAdapter(parseSafetensors(readFileSync(join(dir, f)), f), f);
    assert.deepEqual(matchAdapter(packIndex, a, f), { matched: a.layers.length, unmatched: [] }, f);
    if (a.metadata['method'] === 'orthogonal') orthogonal.push({ name: f, weight: 1, adapter: a });
  }
  assert.deepEqual(overlapWarnings(orthogonal), [], 'the shipped orthogonal adapters use disjoint blocks of one basis');
});

test('merged weights equal W + lambda * alpha/r * up @ down in float64 (MatMul transposed, Gemm and Conv as is)', async () => {
  const a = weighted('fixture-a', 0.7);
  const merged = await mergeAdapters(baseBytes, index, [a]);
  assert.equal(merged.patched, 50);
  const mergedIndex = indexOnnxModel(merged.bytes);
  for (const node of ['/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_k/MatMul', '/time_embedding/linear_1/Gemm', '/conv_in/Conv']) {
    const n = index.nodesByName.get(node)!;
    const layer = a.adapter.layers.find((l) => l.key === kohyaKeyOfNode(n))!;
    const w = values(baseBytes, index, n.inputs[1]!);
    const got = values(merged.bytes, mergedIndex, n.inputs[1]!);
    const { rank: r, inFeatures: inn, outFeatures: out } = layer;
    const scale = (0.7 * layer.alpha) / r;
    let worst = 0;
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inn; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += layer.up[o * r + k]! * layer.down[k * inn + i]!;
        const at = n.opType === 'MatMul' ? i * out + o : o * inn + i; // MatMul stores [in, out]
        worst = Math.max(worst, Math.abs(got[at]! - (w[at]! + scale * d)));
      }
    }
    assert.ok(worst < 1e-6, `${node}: max error ${worst}`);
  }
  assert.deepEqual(baseBytes, new Uint8Array(readFileSync(join(BASE_PACK, 'unet', 'model.onnx'))), 'the base bytes are not modified');
});

test('a merged UNet runs like the base UNet plus an explicit LoRA branch (a at 1, b at 0.5)', async () => {
  const merged = await mergeAdapters(baseBytes, index, [weighted('fixture-a', 1), weighted('fixture-b', 0.5)]);
  assert.deepEqual(merged.warnings, []);
  const [mergedModel, reference, base] = await Promise.all([
    OnnxModel.load(merged.bytes, { provider: 'cpu', threads: 1, label: 'merged' }),
    OnnxModel.load(join(ADAPTERS, 'unet-lora-branch.onnx'), { provider: 'cpu', threads: 1, label: 'reference' }),
    OnnxModel.load(baseBytes, { provider: 'cpu', threads: 1, label: 'base' }),
  ]);
  const g = new Generator(7);
  const d = mergedModel.input('encoder_hidden_states')!.dims[2] as number;
  const feeds = {
    sample: { data: Float32Array.from({ length: 2 * 4 * 8 * 8 }, () => g.normal()), dims: [2, 4, 8, 8] },
    timestep: { data: Float32Array.of(999, 259), dims: [2] },
    encoder_hidden_states: { data: Float32Array.from({ length: 2 * 77 * d }, () => g.normal()), dims: [2, 77, d] },
  };
  const [m, ref, b] = await Promise.all([mergedModel.run(feeds), reference.run(feeds), base.run(feeds)]);
  const diff = (x: Float32Array, y: Float32Array) => x.reduce((s, v, i) => Math.max(s, Math.abs(v - y[i]!)), 0);
  const error = diff(m['out_sample']!.data, ref['out_sample']!.data);
  const effect = diff(b['out_sample']!.data, ref['out_sample']!.data);
  assert.ok(effect > 1e-2, `the adapters change the output (${effect})`);
  assert.ok(error < 1e-4 * Math.max(1, effect), `merged vs branch max error ${error} (adapter effect ${effect})`);
});

test('overlap warnings: disjoint basis blocks are silent, a plain LoRA overlapping them is reported', async () => {
  assert.deepEqual(overlapWarnings([weighted('fixture-a', 1), weighted('fixture-b', 1)]), []);
  const w = overlapWarnings([weighted('fixture-a', 1), weighted('fixture-b', 1), weighted('fixture-c', 1)]);
  assert.equal(w.length, 2);
  assert.match(w[0]!, /adapters fixture-a and fixture-c overlap: .* on 50 of 50 shared layers/);
});

test('keys that match no node are skipped with a warning; other tensors are ignored with a warning', async () => {
  const file = parseSafetensors(readFileSync(join(ADAPTERS, 'fixture-a.safetensors')));
  const t = new Map([...file.tensors].map(([k, v]) => [k, { shape: v.shape, data: v.data }] as const));
  const down = t.get('lora_unet_conv_in.lora_down.weight')!;
  t.set('lora_unet_no_such_block.lora_down.weight', { shape: [2, 3], data: new Float32Array(6) });
  t.set('lora_unet_no_such_block.lora_up.weight', { shape: [4, 2], data: new Float32Array(8) });
  t.set('text_encoder.layers.0.mlp.fc1.weight', down);
  const a = readKohyaAdapter(parseSafetensors(encodeSafetensors(t)), 'extra');
  const merged = await mergeAdapters(baseBytes, index, [{ name: 'extra', weight: 1, adapter: a }]);
  assert.equal(merged.patched, 50);
  assert.match(merged.warnings.join('\n'), /1 of 51 keys match no node of unet and were skipped \(lora_unet_no_such_block\)/);
  assert.match(merged.warnings.join('\n'), /1 tensors are not LoRA weights of a known model and were ignored/);
});

test('an adapter for another model (shapes do not fit) is a clear error and changes nothing', async () => {
  const key = 'lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q';
  const t = new Map([
    [`${key}.lora_down.weight`, { shape: [2, 320], data: new Float32Array(640) }],
    [`${key}.lora_up.weight`, { shape: [320, 2], data: new Float32Array(640) }],
  ]);
  const a = readKohyaAdapter(parseSafetensors(encodeSafetensors(t)), 'sd15');
  const before = baseBytes.slice();
  await assert.rejects(
    mergeAdapters(baseBytes, index, [{ name: 'sd15', weight: 1, adapter: a }]),
    (e: ServiceError) => e.code === 'model_invalid' && /dW \[320, 320\] but .*to_q\/MatMul's weight .* is \[8, 8\]: the adapter was trained for another model/.test(e.message),
  );
  assert.deepEqual(baseBytes, before);
});

test('inconsistent LoRA tensors are rejected when the adapter is read', () => {
  const key = 'lora_unet_conv_in';
  const bad = (entries: [string, number[]][]) =>
    readKohyaAdapter(parseSafetensors(encodeSafetensors(new Map(entries.map(([k, s]) => [k, { shape: s, data: new Float32Array(s.reduce((a, b) => a * b, 1)) }])))), 'bad');
  assert.throws(() => bad([[`${key}.lora_down.weight`, [2, 4]]]), /lora_unet_conv_in has no lora_up.weight/);
  assert.throws(() => bad([[`${key}.lora_down.weight`, [2, 4]], [`${key}.lora_up.weight`, [8, 3]]]), /rank 2 and lora_up rank 3 differ/);
  assert.throws(() => bad([[`${key}.lora_down.weight`, [2, 4, 3, 3]], [`${key}.lora_up.weight`, [8, 2]]]), /expected \[out, r, 1, 1\]/);
  assert.throws(() => bad([['something_else', [1]]]), /no LoRA weights/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addConceptTokens, tokenTable } from '../../../models/adapters/concept-tokens.ts';
import { readKohyaAdapter } from '../../../models/adapters/kohya.ts';
import { indexOnnxModel } from '../../../models/adapters/onnx-graph.ts';
import { encodeSafetensors, parseSafetensors } from '../../../models/adapters/safetensors.ts';
import { AdapterStore } from '../../../models/adapters/store.ts';
import { ClipTextEncoder } from '../../../models/components.ts';
import { ServiceError } from '../../../models/errors.ts';
import { DEFAULT_PACK_OPTIONS } from '../../../models/pack.ts';
import { OnnxModel } from '../../../models/runtime/onnx.ts';
import { loadClipTokenizer } from '../../../models/tokenizer.ts';
import { Engine } from '../../../pipelines/engine.ts';
import { parseParams } from '../../../pipelines/params.ts';
import { BASE_PACK, CONTRACTS, FIXTURES } from '../../helpers/fixtures.ts';

const TEXT_ENCODER = join(BASE_PACK, 'text_encoder', 'model.onnx');
const OPTIONS = { ...DEFAULT_PACK_OPTIONS, threads: 1 };
const code = (c: string, pattern?: RegExp) => (e: unknown) => e instanceof ServiceError && e.code === c && (!pattern || pattern.test(e.message));

async function modelBytes(path: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(path));
}

/** The fixture's token table row of one id (its concept vector copies an existing token exactly). */
function tableRow(bytes: Uint8Array, id: number): Float32Array {
  const table = tokenTable(indexOnnxModel(bytes));
  const dim = table.dims[1]!;
  return new Float32Array(bytes.slice(table.offset + 4 * id * dim, table.offset + 4 * (id + 1) * dim).buffer);
}

/** fixture-a's LoRA plus a bundled embedding for `word` (A1111's bundle_emb key). */
async function adapterWithEmbedding(word: string, vectors: Float32Array, shape: number[]): Promise<Uint8Array> {
  const file = parseSafetensors(await readFile(join(FIXTURES, 'adapters', 'fixture-a.safetensors')));
  const tensors = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
  tensors.set(`bundle_emb.${word}.string_to_param.*`, { shape, data: vectors });
  return encodeSafetensors(tensors, { ...file.metadata, trigger: word });
}

async function hidden(encoder: ClipTextEncoder, ids: Int32Array): Promise<Float32Array> {
  return (await encoder.encode([ids]))[0]!.hidden;
}

test('the tokenizer maps whole concept words to their added ids and leaves every other word alone', async () => {
  const tok = await loadClipTokenizer(join(BASE_PACK, 'tokenizer'));
  const concept = new Map([['heart', [669, 670]]]);
  assert.deepEqual([...tok.encode('a red Heart', concept).slice(0, 6)], [tok.bosId, 320, 602, 669, 670, tok.eosId]);
  assert.deepEqual(tok.encodeText('a red hearts', concept), tok.encodeText('a red hearts'), 'only the whole word');
  assert.deepEqual(tok.encodeText('a red circle', concept), tok.encodeText('a red circle'));
});

test('added tokens: old ids encode bitwise as before, a copied row encodes exactly like the token it copies', async () => {
  for (const pack of ['base', 'fp16']) {
    const path = join(CONTRACTS, pack, 'text_encoder', 'model.onnx');
    const bytes = await modelBytes(path);
    const index = indexOnnxModel(bytes);
    const [vocab, dim] = tokenTable(index).dims as [number, number];
    const red = pack === 'fp16' ? undefined : tableRow(bytes, 602);
    const vectors = new Float32Array(2 * dim);
    vectors.set(red ?? new Float32Array(dim).fill(0.25), dim); // second vector: "red"'s row (fp32 pack)
    const { bytes: added, ids } = addConceptTokens(bytes, index, [{ adapter: 'x', embedding: { word: 'heart', vectors, count: 2, dim } }]);
    assert.deepEqual(ids.get('heart'), [vocab, vocab + 1]);
    assert.deepEqual(tokenTable(indexOnnxModel(added)).dims, [vocab + 2, dim]);
    const before = new ClipTextEncoder(await OnnxModel.load(bytes, { ...OPTIONS, label: 'before' }));
    const after = new ClipTextEncoder(await OnnxModel.load(added, { ...OPTIONS, label: 'after' }));
    const tok = await loadClipTokenizer(join(CONTRACTS, pack, 'tokenizer'));
    const plain = tok.encode('a red circle on the left');
    assert.deepEqual(await hidden(after, plain), await hidden(before, plain), `${pack}: untouched ids`);
    if (red) {
      const viaCopy = tok.encode('a red circle');
      viaCopy[2] = vocab + 1; // "red" through the added row that copies it
      assert.deepEqual(await hidden(after, viaCopy), await hidden(before, tok.encode('a red circle')), 'copied row');
    }
  }
});

test('bundled embeddings: read from kohya files; wrong shape, width, word or a word claimed twice is a clear error', async () => {
  const bytes = await modelBytes(TEXT_ENCODER);
  const index = indexOnnxModel(bytes);
  const dim = tokenTable(index).dims[1]!;
  const good = readKohyaAdapter(parseSafetensors(await adapterWithEmbedding('heart', new Float32Array(dim).fill(0.5), [1, dim])));
  assert.equal(good.embeddings.length, 1);
  assert.deepEqual({ ...good.embeddings[0]!, vectors: undefined }, { word: 'heart', count: 1, dim, vectors: undefined });
  assert.ok(good.layers.length > 0, 'the LoRA layers are still read');
  const read = async (word: string, data: Float32Array, shape: number[]) => readKohyaAdapter(parseSafetensors(await adapterWithEmbedding(word, data, shape)), 'adapter x');
  await assert.rejects(read('heart', new Float32Array(8), [2, 2, 2]), code('model_invalid', /shape \[2, 2, 2\]/));
  await assert.rejects(read('he_art', new Float32Array(dim), [dim]), code('model_invalid', /letters only/));
  await assert.rejects(read('heart', new Float32Array(dim).fill(Number.NaN), [dim]), code('model_invalid', /non-finite/));
  const e = good.embeddings[0]!;
  assert.throws(() => addConceptTokens(bytes, index, [{ adapter: 'a', embedding: e }, { adapter: 'b', embedding: e }]), code('bad_request', /a and b both bring an embedding for the word "heart"/));
  const wide = { ...e, vectors: new Float32Array(dim + 1), dim: dim + 1 };
  assert.throws(() => addConceptTokens(bytes, index, [{ adapter: 'a', embedding: wide }]), code('model_invalid', new RegExp(`${dim + 1} values per vector; the text encoder's tokens have ${dim}`)));
  const unet = await modelBytes(join(BASE_PACK, 'unet', 'model.onnx'));
  assert.throws(() => tokenTable(indexOnnxModel(unet), 'unet'), code('unsupported', /no token embedding table/));
});

test('store + engine: adapters with concept tokens get their text encoder on the worker; only their words encode differently', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'adapters-'));
  const bytes = await modelBytes(TEXT_ENCODER);
  const dim = tokenTable(indexOnnxModel(bytes)).dims[1]!;
  const engine = await Engine.load(BASE_PACK, OPTIONS);
  const store = new AdapterStore(dir, { unet: join(BASE_PACK, 'unet', 'model.onnx'), textEncoder: TEXT_ENCODER }, engine.pack.sessions);
  await assert.rejects(store.add('wide', await adapterWithEmbedding('heart', new Float32Array(dim + 2), [1, dim + 2])), code('model_invalid', /values per vector/));
  await store.add('heart', await adapterWithEmbedding('heart', tableRow(bytes, 602), [1, dim])); // "heart" means "red"
  await writeFile(join(dir, 'other.safetensors'), await adapterWithEmbedding('heart', new Float32Array(dim), [1, dim]));
  await assert.rejects(store.merged([{ name: 'heart', weight: 1 }, { name: 'other', weight: 1 }]), code('bad_request', /both bring an embedding/));

  engine.attach({ adapters: store });
  const withAdapter = (prompt: string) => parseParams({ prompt, adapters: [{ name: 'heart', weight: 1 }] });
  const { prompt: viaConcept, variant } = await engine.prepare(withAdapter('a heart'));
  assert.deepEqual([...variant.text!.tokens], [['heart', [669]]]);
  assert.equal(variant.text!.encoders[0]!.model.label, 'text_encoder+heart:1');
  const red = await engine.prepare(parseParams({ prompt: 'a red' }));
  assert.equal(red.variant.text, undefined);
  assert.deepEqual(viaConcept.cond, red.prompt.cond, '"heart" reads as the row it copies');
  const plain = await engine.prepare(withAdapter('a circle'));
  const base = await engine.prepare(parseParams({ prompt: 'a circle' }));
  assert.deepEqual(plain.prompt.cond, base.prompt.cond, 'prompts without the word are unchanged');
  const unadapted = await engine.prepare(parseParams({ prompt: 'a heart' }));
  assert.notDeepEqual(unadapted.prompt.cond, viaConcept.cond, 'without the adapter the word is plain text');
});

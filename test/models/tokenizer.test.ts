import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClipTokenizer, loadClipTokenizer } from '../../models/tokenizer.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';

/** A hand-built CLIP-format vocabulary: a few byte symbols, merges, and the two specials. */
function handBuilt(padId?: number): ClipTokenizer {
  const tokens = ['a', 'b', 'c', 'a</w>', 'b</w>', 'c</w>', '!</w>', 'ab', 'ab</w>', 'abc</w>', 'ca', 'cab</w>', '<|startoftext|>', '<|endoftext|>'];
  const vocab = new Map(tokens.map((t, i) => [t, i]));
  const merges = ['a b', 'ab c</w>', 'c a', 'ca b</w>', 'a b</w>'];
  return new ClipTokenizer(vocab, merges, { maxLength: 8, padId: padId ?? 13 });
}

test('BPE merges by rank, words end with </w>, text is lower-cased', () => {
  const t = handBuilt();
  assert.deepEqual(t.encodeText('abc'), [9]); // a b -> ab, ab c</w> -> abc</w>
  assert.deepEqual(t.encodeText('CAB'), [11]); // c a -> ca, then a b</w> is not applicable, ca b</w> -> cab</w>
  assert.deepEqual(t.encodeText('ab  a'), [8, 3]);
  assert.deepEqual(t.encodeText('ab!'), [8, 6]); // punctuation is its own pre-token
  assert.deepEqual(t.encodeText('x'), [13]); // a byte symbol missing from the vocabulary -> <|endoftext|>
});

test('BOS/EOS, padding with the pad id, truncation keeps EOS', () => {
  const t = handBuilt();
  assert.deepEqual([...t.encode('abc')], [12, 9, 13, 13, 13, 13, 13, 13]);
  assert.deepEqual([...handBuilt(0).encode('abc')], [12, 9, 13, 0, 0, 0, 0, 0]);
  assert.deepEqual([...t.encode('a a a a a a a a a a')], [12, 3, 3, 3, 3, 3, 3, 13]);
});

// the caption-trained candidate's vocabulary (clip_tokenizer.py's output since issue 17; the shipped pack keeps the first one)
const CAPTION_VOCABULARY = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'train', 'candidates', 'caption-base', 'tokenizer');

for (const [name, dir] of [['the embedded pack', join(EMBEDDED_PACK_DIR, 'tokenizer')], ['the extended vocabulary', CAPTION_VOCABULARY]] as const) {
  test(`${name}: the tokenizer matches the Python tokenizer it was trained with`, async () => {
    const tokenizer = await loadClipTokenizer(dir);
    const vectors = JSON.parse(await readFile(join(dir, 'test_vectors.json'), 'utf8')) as { vectors: { text: string; input_ids: number[] }[] };
    assert.ok(vectors.vectors.length >= 10);
    for (const v of vectors.vectors) assert.deepEqual([...tokenizer.encode(v.text)], v.input_ids, v.text);
  });
}

test('the extended vocabulary: words people type are one token each, the first vocabulary keeps its ids, EOS is the largest id', async () => {
  const dir = CAPTION_VOCABULARY;
  const tokenizer = await loadClipTokenizer(dir);
  for (const word of ['big', 'huge', 'tiny', 'little', 'center', 'middle', 'upper', 'lower', 'disc', 'backdrop', 'beautiful', 'highly', 'detailed', 'minimal', 'illustration', 'photo', 'draw', 'please']) {
    assert.equal(tokenizer.encodeText(word).length, 1, word);
  }
  const vocab = JSON.parse(await readFile(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
  // the contract fixtures keep a copy of the first (grammar-only) vocabulary the base model was trained with
  const first = JSON.parse(await readFile(join(BASE_PACK, 'tokenizer', 'vocab.json'), 'utf8')) as Record<string, number>;
  for (const [token, id] of Object.entries(first)) if (!token.startsWith('<|')) assert.equal(vocab[token], id, token);
  const largest = Math.max(...Object.values(vocab));
  assert.deepEqual([tokenizer.eosId, tokenizer.bosId], [largest, largest - 1], 'the text encoder pools at argmax(input_ids)');
});

test('loads vocab.json + merges.txt and reads the pad token from special_tokens_map.json', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tok-'));
  await writeFile(join(dir, 'vocab.json'), JSON.stringify({ '!': 0, a: 1, 'a</w>': 2, b: 3, 'b</w>': 4, 'ab</w>': 5, '<|startoftext|>': 6, '<|endoftext|>': 7 }));
  await writeFile(join(dir, 'merges.txt'), '#version: 0.2\na b</w>\n');
  await writeFile(join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: '!' }));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 5 }));
  const t = await loadClipTokenizer(dir);
  assert.deepEqual([...t.encode('ab')], [6, 5, 7, 0, 0]);
  // tokenizer.json takes precedence when present
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ model: { vocab: { a: 0, 'b</w>': 1, '<|startoftext|>': 2, '<|endoftext|>': 3, '!': 4 }, merges: [] } }));
  assert.deepEqual([...(await loadClipTokenizer(dir)).encode('ab')], [2, 0, 1, 3, 4]);
});

test('a tokenizer folder without a vocabulary is a clear load error', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tok-'));
  await assert.rejects(loadClipTokenizer(dir), /tokenizer\/vocab\.json is missing/);
});

/**
 * CLIP's byte-level BPE tokenizer (REFERENCE §6), built from a pack's tokenizer/vocab.json + merges.txt
 * (or tokenizer.json when present). Hand-written: the maintained JS tokenizers load only tokenizer.json,
 * which Stable Diffusion repositories do not ship.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeHTML } from 'entities';
import { ServiceError } from './errors.ts';
import { exists, readJsonObject } from './files.ts';

export interface TokenizerOptions {
  /** Sequence length the text encoder expects (77 for every SD model). */
  readonly maxLength: number;
  /** Id used for padding: <|endoftext|> in SD 1.x, "!" (id 0) in SD 2.x / SD-Turbo. */
  readonly padId: number;
}

const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';
// CLIP's pre-tokenizer: special tokens, English contractions, letter runs, single digits, other symbol runs.
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** GPT-2/CLIP's reversible map from bytes to printable unicode characters. */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  }
  return table;
}
const BYTE_TO_UNICODE = bytesToUnicode();

/** CLIP's context: BOS, 75 tokens, EOS (padded to this length). */
export const CLIP_CONTEXT_LENGTH = 77;

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, string[]>();

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    merges: readonly string[],
    readonly options: TokenizerOptions,
  ) {
    this.ranks = new Map(merges.map((m, i) => [m, i]));
    const id = (token: string): number => {
      const v = vocab.get(token);
      if (v === undefined) throw new ServiceError('model_invalid', `tokenizer vocabulary has no ${token}`);
      return v;
    };
    this.bosId = id(BOS);
    this.eosId = id(EOS);
    if (options.maxLength < 2) throw new ServiceError('model_invalid', 'tokenizer maxLength must be at least 2');
  }

  /**
   * Token ids without BOS/EOS or padding. A piece outside the vocabulary becomes <|endoftext|> (HF's unk).
   * `conceptTokens` maps whole words to the ids of added tokens (adapters' learned embeddings) instead.
   */
  encodeText(text: string, conceptTokens?: ReadonlyMap<string, readonly number[]>): number[] {
    // CLIP's basic_clean: HTML entities unescaped twice, whitespace collapsed, lower-cased.
    const clean = decodeHTML(decodeHTML(text)).normalize('NFC').replace(/\s+/g, ' ').trim().toLowerCase();
    const ids: number[] = [];
    for (const match of clean.matchAll(PATTERN)) {
      if (match[0] === BOS || match[0] === EOS) {
        ids.push(match[0] === BOS ? this.bosId : this.eosId); // written-out special tokens stay special, as in CLIP
        continue;
      }
      const concept = conceptTokens?.get(match[0]);
      if (concept) {
        ids.push(...concept);
        continue;
      }
      const word = Array.from(new TextEncoder().encode(match[0]), (b) => BYTE_TO_UNICODE[b]!).join('');
      for (const piece of this.bpe(word)) {
        ids.push(this.vocab.get(piece) ?? this.eosId);
      }
    }
    return ids;
  }

  /** [BOS, ...ids, EOS] truncated to maxLength keeping EOS, then padded with padId. */
  encode(text: string, conceptTokens?: ReadonlyMap<string, readonly number[]>): Int32Array {
    const { maxLength, padId } = this.options;
    const body = this.encodeText(text, conceptTokens).slice(0, maxLength - 2);
    const out = new Int32Array(maxLength).fill(padId);
    out[0] = this.bosId;
    out.set(body, 1);
    out[body.length + 1] = this.eosId;
    return out;
  }

  /** BPE on one pre-token: split into symbols, the last ending in </w>, merge the best-ranked pair until none. */
  private bpe(word: string): string[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    const chars = Array.from(word);
    let symbols = chars.map((ch, i) => (i === chars.length - 1 ? `${ch}</w>` : ch));
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < symbols.length - 1; i++) {
        const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const first = symbols[best]!;
      const second = symbols[best + 1]!;
      // Merge every occurrence of the pair, left to right, as the reference implementation does.
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i < symbols.length - 1 && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else merged.push(symbols[i]!);
      }
      symbols = merged;
    }
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(word, symbols);
    return symbols;
  }
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** Loads a pack's tokenizer folder: tokenizer.json if present, else vocab.json + merges.txt. */
export async function loadClipTokenizer(dir: string, maxLength = CLIP_CONTEXT_LENGTH): Promise<ClipTokenizer> {
  let vocab: Map<string, number>;
  let merges: string[];
  const tokenizerJson = join(dir, 'tokenizer.json');
  if (await exists(tokenizerJson)) {
    const model = (await readJsonObject(tokenizerJson, 'tokenizer/tokenizer.json'))['model'] as { vocab?: Record<string, number>; merges?: (string | [string, string])[] } | undefined;
    if (!model?.vocab || !model.merges) throw new ServiceError('model_invalid', `${tokenizerJson} has no BPE model`);
    vocab = new Map(Object.entries(model.vocab));
    merges = model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  } else {
    vocab = new Map(Object.entries((await readJsonObject(join(dir, 'vocab.json'), 'tokenizer/vocab.json')) as Record<string, number>));
    let text: string;
    try {
      text = await readFile(join(dir, 'merges.txt'), 'utf8');
    } catch (cause) {
      throw new ServiceError('model_invalid', `cannot read ${join(dir, 'merges.txt')}`, { cause });
    }
    merges = text.split('\n').filter((line) => line.length > 0 && !line.startsWith('#version'));
  }
  // Padding: SD 2.x and SD-Turbo pad with "!" (id 0), SD 1.x with <|endoftext|>; the config says which.
  const configPath = join(dir, 'tokenizer_config.json');
  const specialPath = join(dir, 'special_tokens_map.json');
  const config = (await exists(configPath)) ? await readJsonObject(configPath, 'tokenizer/tokenizer_config.json') : {};
  const special = (await exists(specialPath)) ? await readJsonObject(specialPath, 'tokenizer/special_tokens_map.json') : {};
  const padToken = tokenContent(special['pad_token']) ?? tokenContent(config['pad_token']) ?? EOS;
  const padId = vocab.get(padToken);
  if (padId === undefined) throw new ServiceError('model_invalid', `tokenizer pad token "${padToken}" is not in the vocabulary`);
  const configured = config['model_max_length'];
  const length = typeof configured === 'number' && configured > 0 && configured < 100_000 ? configured : maxLength;
  return new ClipTokenizer(vocab, merges, { maxLength: length, padId });
}

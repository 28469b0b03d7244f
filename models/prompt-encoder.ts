/**
 * Prompt text -> what the UNet is conditioned on, for one CLIP text tower (SD 1.x / 2.x: last_hidden_state and
 * pooler_output) or two (SDXL: each tower's penultimate hidden state, concatenated per token into [77, 768 + 1280],
 * and text_encoder_2's text_embeds as the pooled vector). Each tower has its own tokenizer (SDXL's second pads
 * with "!"). CLIP reads 77 tokens: BOS, 75 of the prompt, EOS; a longer prompt is cut, and the cut is reported.
 */
import type { ClipTextEncoder, PromptEmbedding } from './components.ts';
import type { ClipTokenizer } from './tokenizer.ts';

export interface TextTower {
  readonly tokenizer: ClipTokenizer;
  readonly encoder: ClipTextEncoder;
}

export interface EncodedText {
  readonly embedding: PromptEmbedding;
  /** Prompt tokens (without BOS/EOS) and how many the window kept. */
  readonly tokens: number;
  readonly kept: number;
}

/** Word ids of concept tokens (adapters' learned embeddings), applied to the first tower's tokenizer. */
export type ConceptTokenMap = ReadonlyMap<string, readonly number[]>;

export class PromptEncoder {
  constructor(
    readonly towers: readonly TextTower[],
    /** SDXL's force_zeros_for_empty_prompt: an empty negative prompt conditions on zeros, not on "" encoded. */
    readonly zeroEmptyNegative = false,
  ) {
    if (towers.length === 0) throw new Error('a prompt encoder needs a text encoder');
  }

  /** The same tokenizers with other encoder sessions (merged LoRA or concept tokens); undefined keeps a tower's own. */
  withEncoders(encoders: readonly (ClipTextEncoder | undefined)[]): PromptEncoder {
    return new PromptEncoder(
      this.towers.map((t, i) => ({ tokenizer: t.tokenizer, encoder: encoders[i] ?? t.encoder })),
      this.zeroEmptyNegative,
    );
  }

  /** Encodes one prompt; the hidden states of every tower are concatenated per token, pooled from the last tower. */
  async encode(text: string, concepts?: ConceptTokenMap): Promise<EncodedText> {
    const first = this.towers[0]!.tokenizer;
    const tokens = first.encodeText(text, concepts).length;
    const outputs = await Promise.all(this.towers.map(async (t, i) => (await t.encoder.encode([t.tokenizer.encode(text, i === 0 ? concepts : undefined)]))[0]!));
    const pooled = outputs[outputs.length - 1]!.pooled;
    return { embedding: { hidden: concatPerToken(outputs.map((o) => o.hidden), first.options.maxLength), pooled }, tokens, kept: Math.min(tokens, first.options.maxLength - 2) };
  }

  /** Zeros of an encoded prompt's shape (SDXL's unconditional input for an empty negative prompt). */
  zerosLike(e: PromptEmbedding): PromptEmbedding {
    return { hidden: new Float32Array(e.hidden.length), pooled: new Float32Array(e.pooled.length) };
  }
}

/** [77, D1] and [77, D2] -> [77, D1 + D2] (each token's vectors side by side). */
function concatPerToken(parts: readonly Float32Array[], tokens: number): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const widths = parts.map((p) => p.length / tokens);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(tokens * total);
  for (let t = 0; t < tokens; t++) {
    let at = t * total;
    parts.forEach((p, i) => {
      out.set(p.subarray(t * widths[i]!, (t + 1) * widths[i]!), at);
      at += widths[i]!;
    });
  }
  return out;
}

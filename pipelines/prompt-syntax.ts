/**
 * AUTOMATIC1111's prompt syntax, for the interfaces whose users write it (A1111, OpenAI prompts, PNG infotext):
 * - `<lora:name>` / `<lora:name:weight>` picks an adapter (a second, text-encoder weight is ignored) and leaves
 *   the prompt;
 * - `text :weight AND text :weight` (composable diffusion) is a weighted prompt blend here.
 */
import { ServiceError } from '../models/errors.ts';
import type { GenerationParams } from './params.ts';

type Prompt = GenerationParams['prompt'];
export interface AdapterChoice {
  name: string;
  weight: number;
}

/** <lora:name> or <lora:name:weight>, with an optional third part. */
const LORA_TAG = /<lora:([^:>]+)(?::([^:>]+))?(?::[^>]*)?>/gi;
/** A1111's re_AND and re_weight (modules/prompt_parser.py). */
const AND = /\bAND\b/;
const WEIGHT = /^([\s\S]*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$/;

/** Takes A1111's <lora:...> tags out of a prompt: the prompt without them and the adapters they name. */
export function loraTags(prompt: string): { prompt: string; adapters: AdapterChoice[] } {
  const adapters: AdapterChoice[] = [];
  const text = prompt.replace(LORA_TAG, (_, name: string, weight: string | undefined) => {
    const w = weight === undefined ? 1 : Number(weight);
    if (!Number.isFinite(w)) throw new ServiceError('bad_request', `prompt: <lora:${name}:${weight}> has no numeric weight`, { field: 'prompt' });
    adapters.push({ name: name.trim(), weight: w });
    return ' ';
  });
  return { prompt: text.replace(/[ \t]+/g, ' ').replace(/ ?\n ?/g, '\n').trim(), adapters };
}

/** A prompt in A1111's syntax: its adapters, and a weighted blend when it has AND. */
export function parsePrompt(text: string, options: { blends: boolean }): { prompt: Prompt; adapters: AdapterChoice[] } {
  const { prompt, adapters } = loraTags(text);
  if (!options.blends || !AND.test(prompt)) return { prompt, adapters };
  const parts = prompt.split(AND).map((part) => {
    const m = WEIGHT.exec(part)!;
    return { text: m[1]!.trim(), weight: m[2] === undefined ? 1 : Number(m[2]) };
  });
  return { prompt: parts, adapters };
}

/** The prompt in A1111's syntax: a blend as `text :w AND text :w`, adapters as trailing <lora:name:weight> tags. */
export function writePrompt(prompt: Prompt, adapters: readonly AdapterChoice[]): string {
  const text = typeof prompt === 'string' ? prompt : prompt.map((p) => `${p.text} :${p.weight}`).join(' AND ');
  const tags = adapters.map((a) => `<lora:${a.name}:${a.weight}>`);
  return [text, ...tags].filter((s) => s !== '').join(' ');
}

/**
 * A1111's variation seed (subseed at subseed_strength s) as a seed blend: the seed's noise at 1 - s and the
 * subseed's at s (A1111 slerps the two noises; here they are mixed and renormalised, which moves the same way).
 */
export function variationSeeds(seed: number, subseed: number, strength: number): GenerationParams['seed'] {
  if (strength <= 0) return seed;
  return [
    { seed, weight: 1 - strength },
    { seed: subseed, weight: strength },
  ];
}

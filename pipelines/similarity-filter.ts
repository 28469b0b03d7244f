/**
 * Stochastic Similarity Filter (StreamDiffusion §3.4, REFERENCE §1). When the input barely changes, skip
 * the whole pipeline and show the previous output. The skip is random, with a probability that rises as
 * the cosine similarity to the last processed input approaches 1:
 *   p_skip = max(0, 1 - (1 - cos) / (1 - threshold))
 * so a static scene is mostly skipped yet still refreshed now and then, and never more than
 * maxSkipFrames frames in a row. The draw comes from the seeded generator passed in (deterministic).
 */
import { cosineSimilarity, pixelCosineSimilarity } from '../models/vector.ts';
import type { Generator } from './random.ts';

export interface SimilarityFilterConfig {
  /** Similarity at which skipping starts; 0.98 in the original. 1 disables the filter. */
  readonly threshold: number;
  /** Longest run of skipped frames before one is processed anyway; 10 in the original. */
  readonly maxSkipFrames: number;
}

export const DEFAULT_SIMILARITY_FILTER: SimilarityFilterConfig = Object.freeze({ threshold: 0.98, maxSkipFrames: 10 });

/** The probability of skipping a frame whose input has cosine similarity `cos` to the last processed one. */
export function skipProbability(cos: number, threshold: number): number {
  if (threshold >= 1) return 0;
  return Math.max(0, 1 - (1 - cos) / (1 - threshold));
}

export interface FilterDecision {
  readonly skip: boolean;
  /** Cosine similarity to the last processed input (undefined for the first frame). */
  readonly similarity: number | undefined;
  readonly probability: number;
}

/** A preprocessed input: an image tensor [3, H, W] in [-1, 1], or the same image as RGB bytes [H, W, 3]. */
export type FilterInput = Float32Array | Uint8Array;

export class SimilarityFilter {
  private previous: FilterInput | undefined;
  private consecutiveSkips = 0;

  constructor(
    public config: SimilarityFilterConfig,
    private readonly generator: Generator,
  ) {}

  /** Whether the filter can skip anything (threshold 1 disables it: then it does no work at all). */
  get enabled(): boolean {
    return this.config.threshold < 1;
  }

  /** Decides for one preprocessed input (the image before the VAE). Keeps a copy when processed. */
  check(input: FilterInput): FilterDecision {
    const previous = this.previous;
    if (previous === undefined || previous.length !== input.length || previous.constructor !== input.constructor) {
      this.remember(input);
      return { skip: false, similarity: undefined, probability: 0 };
    }
    const similarity = input instanceof Uint8Array ? pixelCosineSimilarity(previous as Uint8Array, input) : cosineSimilarity(previous, input);
    const probability = skipProbability(similarity, this.config.threshold);
    const u = this.generator.uniform();
    if (u <= probability && probability > 0 && this.consecutiveSkips < this.config.maxSkipFrames) {
      this.consecutiveSkips++;
      return { skip: true, similarity, probability };
    }
    this.remember(input);
    return { skip: false, similarity, probability };
  }

  /** Forget the last input (the next frame is always processed). */
  reset(): void {
    this.previous = undefined;
    this.consecutiveSkips = 0;
  }

  private remember(input: FilterInput): void {
    this.previous = input.slice();
    this.consecutiveSkips = 0;
  }
}

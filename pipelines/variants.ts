/**
 * Which UNet serves a request: the pack's own, a pruned expert chosen by the prompt router within a compute
 * budget (APTP), or the full UNet with adapters merged into its weights (Orthogonal Adaptation). Rows are
 * batched only with rows of the same variant (its `key`).
 *
 * Adapters are merged into the full UNet only: a pruned expert has other weight shapes. A request with
 * adapters is therefore served by the full UNet whatever its budget.
 */
import type { Unet } from '../models/components.ts';
import { adapterKey } from '../models/adapters/choices.ts';
import type { AdapterInfo, ConceptText } from '../models/adapters/store.ts';
import { ServiceError } from '../models/errors.ts';
import type { GenerationParams } from './params.ts';
import { pickExpert, type ExpertCost, type RoutableExperts } from '../models/aptp/routing.ts';

export interface AdapterWeight {
  readonly name: string;
  readonly weight: number;
}

export interface UnetVariant {
  /** Batching key: rows of one key run in one UNet call. */
  readonly key: string;
  readonly unet: Unet;
  readonly expert: string;
  readonly relativeMacs: number;
  readonly adapters: readonly AdapterWeight[];
  /** The text encoder and concept tokens prompts use with this variant's adapters (when they bring any). */
  readonly text?: ConceptText | undefined;
}

/** APTP experts (models/aptp/experts.ts provides one); size and measured latency are shown by GET /v1/experts. */
export type ExpertSource = RoutableExperts<ExpertCost & { readonly unet: Unet; readonly parameters?: number; readonly latencyMs?: number }>;

/** Merged-adapter sessions (models/adapters/store.ts provides one, with a folder to list and upload into). */
export interface AdapterSource {
  merged(adapters: readonly AdapterWeight[]): Promise<{ unet: Unet; warnings: string[]; text?: ConceptText | undefined }>;
  list?(): Promise<AdapterInfo[]>;
  add?(name: string, bytes: Uint8Array): Promise<AdapterInfo>;
}

export const FULL_EXPERT = 'full';

export class VariantResolver {
  constructor(
    private readonly base: Unet,
    readonly experts: ExpertSource | undefined,
    readonly adapters: AdapterSource | undefined,
  ) {}

  /**
   * The variant for these parameters and prompt. The router reads the pooled prompt embedding, asked for only
   * when there are no adapters (adapters decide how the prompt is encoded, and always run on the full UNet).
   */
  async resolve(params: Pick<GenerationParams, 'budget' | 'expert' | 'adapters'>, pooled: () => Promise<Float32Array>): Promise<UnetVariant & { warnings: string[] }> {
    const active = params.adapters.filter((a) => a.weight !== 0);
    if (active.length > 0) {
      if (!this.adapters) throw new ServiceError('not_found', `this model has no adapters (asked for ${active.map((a) => a.name).join(', ')})`, { field: 'adapters' });
      const fullName = this.experts?.experts.find((e) => e.relativeMacs === 1)?.name ?? FULL_EXPERT;
      const { unet, warnings, text } = await this.adapters.merged(active);
      const unused = [params.budget !== 1 ? `budget ${params.budget}` : '', params.expert !== undefined ? `expert ${params.expert}` : ''].filter(Boolean);
      const notes = unused.length > 0 ? [`adapters merge into the full UNet only: ${unused.join(' and ')} not applied`, ...warnings] : warnings;
      return { key: `${fullName}+${adapterKey(active)}`, unet, expert: fullName, relativeMacs: 1, adapters: active, text, warnings: notes };
    }
    if (this.experts) {
      const e = pickExpert(this.experts, await pooled(), params.budget, params.expert);
      return { key: e.name, unet: e.unet, expert: e.name, relativeMacs: e.relativeMacs, adapters: [], warnings: [] };
    }
    if (params.expert !== undefined && params.expert !== FULL_EXPERT) {
      throw new ServiceError('not_found', `this model has no expert "${params.expert}" (it has only "${FULL_EXPERT}")`, { field: 'expert' });
    }
    return { key: FULL_EXPERT, unet: this.base, expert: FULL_EXPERT, relativeMacs: 1, adapters: [], warnings: [] };
  }
}

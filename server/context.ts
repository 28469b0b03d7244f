/** What every part of the server shares: configuration, the engine, logs, metrics and the UNet batcher. */
import type { Engine } from '../pipelines/engine.ts';
import type { GenerationParams } from '../pipelines/params.ts';
import { planRequest, type Mode, type Plan, type PlanDefaults, type RunnerFactory } from '../pipelines/plan.ts';
import type { ServerConfig } from './config.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import { UnetBatcher } from './batcher.ts';
import { LiveCapacity } from './admission.ts';

export interface AppContext {
  readonly config: ServerConfig;
  readonly engine: Engine;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly batcher: UnetBatcher;
  /** The live load on the workers, and whether a new stream fits (server/admission.ts). */
  readonly capacity: LiveCapacity;
  /** UNet runners through the cross-stream batcher: rows of one latent size and UNet variant run together. */
  readonly runners: RunnerFactory;
  /**
   * What unset parameters become (--tiny-vae) and the class of the model calls: live streams, synchronous batch
   * renders (interactive), jobs (background).
   */
  readonly defaults: { readonly live: PlanDefaults; readonly batch: PlanDefaults; readonly job: PlanDefaults };
  /** A batch request's plan, its UNet calls going through `runners`; `job`: a background job's. */
  plan(params: GenerationParams, mode: Mode, kind?: 'batch' | 'job'): Promise<Plan>;
  /** Set once SIGTERM (or close()) starts draining: no new streams or jobs. */
  readonly draining: boolean;
  /** Aborted when a shutdown's grace period is over: work for HTTP requests still running must stop. */
  readonly shutdown: AbortSignal;
}

export function createContext(config: ServerConfig, engine: Engine, log: Logger, metrics: Metrics, shutdown: AbortSignal = new AbortController().signal): AppContext & { draining: boolean } {
  const batcher = new UnetBatcher(config.maxBatchRows, metrics, undefined, config.backgroundShare);
  const batchVae = config.tinyVae === 'all' ? 'tiny' : 'full';
  return {
    config,
    engine,
    log,
    metrics,
    batcher,
    capacity: new LiveCapacity(2 * config.backgroundShare),
    draining: false,
    shutdown,
    runners: (size, variant) => batcher.runner(size, variant.key, engine.unetRunner(size, variant)),
    defaults: {
      live: Object.freeze({ vae: config.tinyVae === 'off' ? 'full' : 'tiny', urgency: 'live' }),
      batch: Object.freeze({ vae: batchVae, urgency: 'interactive' }),
      job: Object.freeze({ vae: batchVae, urgency: 'background' }),
    },
    // `this`, so that a context copied with other runners (tests wrap them) plans with those
    plan(params, mode, kind = 'batch') {
      return planRequest(this.engine, params, mode, this.runners, this.defaults[kind]);
    },
  };
}

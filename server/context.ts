/** What every part of the server shares: configuration, the engine, logs, metrics and the UNet batcher. */
import type { Engine, Size } from '../pipelines/engine.ts';
import type { UnetRunner } from '../pipelines/denoise-step.ts';
import type { UnetVariant } from '../pipelines/variants.ts';
import type { ServerConfig } from './config.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import { UnetBatcher } from './batcher.ts';

export interface AppContext {
  readonly config: ServerConfig;
  readonly engine: Engine;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly batcher: UnetBatcher;
  /** UNet runner through the cross-stream batcher for latents of `size` on a variant (default: the pack's UNet). */
  runner(size: Size, variant?: UnetVariant): UnetRunner;
  /** Set once SIGTERM (or close()) starts draining: no new streams or jobs. */
  readonly draining: boolean;
}

export function createContext(config: ServerConfig, engine: Engine, log: Logger, metrics: Metrics): AppContext & { draining: boolean } {
  const batcher = new UnetBatcher(config.maxBatchRows, metrics);
  return {
    config,
    engine,
    log,
    metrics,
    batcher,
    draining: false,
    runner: (size, variant) => {
      const unet = variant?.unet ?? engine.pack.unet;
      return batcher.runner(size, variant?.key ?? 'full', (rows, s) => unet.predict(rows, s.latentHeight, s.latentWidth));
    },
  };
}

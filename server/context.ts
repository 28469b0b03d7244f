/** What every part of the server shares: configuration, the engine, logs, metrics and the UNet batcher. */
import type { Engine, Size } from '../pipelines/engine.ts';
import type { UnetRunner } from '../pipelines/denoise-step.ts';
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
  /** UNet runner through the cross-stream batcher for latents of `size`. */
  runner(size: Size): UnetRunner;
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
    runner: (size) => batcher.runner(size, 'base', (rows, s) => engine.pack.unet.predict(rows, s.latentHeight, s.latentWidth)),
  };
}

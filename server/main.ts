/**
 * The service on the embedded model (or --model DIR), on 127.0.0.1:7860 by default, all in this process. With
 * --redis URL (or REDIS_URL) it is a node of a cluster: `--role api` (gateway), `--role worker` (`npm run worker`),
 * or both (the default role). `npm start` runs it as `node --import tsx server/main.ts` (no wrapper process in
 * between, so a process manager's SIGTERM reaches it). SIGTERM or SIGINT drains (server/app.ts close()) and exits
 * 0; a second signal exits at once.
 */
import { ServiceError } from '../models/errors.ts';
import { startServer, type ExtensionFactory } from './app.ts';
import { loadConfig } from './config.ts';
import { createLogger } from './log.ts';
import { createBatchApi } from './batch/index.ts';
import { createClusterNode } from './cluster/index.ts';
import { closeSharedPool } from '../models/runtime/worker-pool.ts';

const log = createLogger({ service: 'streamdiffusion-node' });

async function main(): Promise<void> {
  const config = loadConfig();
  const { redisUrl } = config;
  const cluster = redisUrl === undefined ? undefined : createClusterNode({ ...config, redisUrl }, log);
  const extensions: ExtensionFactory[] = [(ctx) => createBatchApi(ctx, cluster ? { backend: cluster.backend } : {})];
  if (cluster) extensions.push(cluster.extension);
  const server = await startServer(config, { log, extensions });
  log.info('listening', { url: server.url, model: server.ctx.engine.pack.name, provider: config.provider, ...(cluster ? { node: cluster.id, role: config.role } : {}) });
  console.log(`\n  streamdiffusion-node on ${server.url}  (model: ${server.ctx.engine.pack.name})\n  UI: ${server.url}/   stream: ws${server.url.slice(4)}/v1/stream\n`);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      log.warn('second signal: exiting without draining', { signal });
      process.exit(1);
    }
    stopping = true;
    log.info('draining', { signal });
    // the model workers end before the process: onnxruntime aborts it when a live session is torn down
    server.close().then(closeSharedPool).then(
      () => {
        log.info('stopped', { signal });
        process.exit(0);
      },
      (error: unknown) => {
        log.error('shutdown failed', { error: String(error) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  const e = error instanceof ServiceError ? `${error.code}: ${error.message}` : error instanceof Error ? error.stack : String(error);
  log.error('failed to start', { error: e });
  process.exitCode = 1;
});

/**
 * The HTTP + WebSocket server: express for the API, the UI and the MJPEG outputs, ws for streams.
 * startServer() is what `npm start` and the tests call.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { ServiceError } from '../models/errors.ts';
import { Engine } from '../pipelines/engine.ts';
import { authMiddleware, corsMiddleware, rateLimit } from './auth.ts';
import { DEFAULT_CONFIG, type ServerConfig } from './config.ts';
import { createContext, type AppContext } from './context.ts';
import { errorHandler, notFound } from './http-errors.ts';
import { createLogger, type Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { StreamRegistry } from './streams/registry.ts';
import { streamRoutes } from './streams/routes.ts';
import { attachStreamServer } from './streams/ws.ts';
import { webrtcRoutes } from './webrtc/routes.ts';
import { modelRoutes } from './model-routes.ts';
import { CLOSE } from './streams/protocol.ts';

const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'web');

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly ctx: AppContext;
  readonly streams: StreamRegistry;
  readonly http: Server;
  /** Graceful: refuse new work, end streams with 1001, let jobs checkpoint, close sockets. */
  close(): Promise<void>;
}

/** Hooks other parts of the server plug in (the batch API mounts its router and job runner here). */
export interface ServerExtension {
  readonly router: express.Router;
  start?(): Promise<void>;
  drain?(): Promise<void>;
}
export type ExtensionFactory = (ctx: AppContext) => ServerExtension;

export async function startServer(
  overrides: Partial<ServerConfig> = {},
  options: { engine?: Engine; log?: Logger; extensions?: readonly ExtensionFactory[] } = {},
): Promise<RunningServer> {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...overrides };
  const log = options.log ?? createLogger({ service: 'streamdiffusion-node' });
  const ownEngine = !options.engine;
  const engine = options.engine ?? (await Engine.load(config.modelDir, { provider: config.provider, threads: config.threads, workers: config.workers }));
  const metrics = new Metrics(true);
  const ctx = createContext(config, engine, log, metrics);
  // the model calls' queue: its share rule from the config, its waits and misses into the metrics
  const dispatcher = engine.pack.sessions.dispatcher;
  dispatcher?.setMinShare(config.backgroundShare);
  const unobserve = dispatcher ? metrics.observeDispatcher(dispatcher) : () => undefined;
  const unwatch = dispatcher ? ctx.capacity.watch(dispatcher) : () => undefined;
  const registry = new StreamRegistry(config.maxStreams, config.maxStreamsPerClient, engine.size({}));
  const extensions = (options.extensions ?? []).map((make) => make(ctx));

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(corsMiddleware(config));
  app.get('/health', (_req, res) => {
    res.json({ status: ctx.draining ? 'draining' : 'ok', model: engine.pack.name, streams: registry.size, unet_queue: ctx.batcher.waiting, capacity: ctx.capacity.snapshot() });
  });
  app.use(authMiddleware(config));
  app.use(rateLimit(config.rateLimitPerMinute));
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use((_req, _res, next) => next(ctx.draining ? new ServiceError('unavailable', 'the server is shutting down') : undefined));
  app.use(express.json({ limit: '50mb' }));
  app.use(streamRoutes(registry, log));
  const webrtc = webrtcRoutes(ctx, registry);
  app.use(webrtc.router);
  app.use(modelRoutes(ctx));
  for (const ext of extensions) app.use(ext.router);
  app.use(express.static(WEB_DIR, { index: 'index.html', extensions: ['html'] }));
  app.use(notFound);
  app.use(errorHandler(log));

  const http = createServer(app);
  const wss = attachStreamServer(http, ctx, registry);
  await new Promise<void>((ok, fail) => {
    http.once('error', fail);
    http.listen(config.port, config.host, () => ok());
  });
  const port = (http.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  for (const ext of extensions) await ext.start?.();

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      (ctx as { draining: boolean }).draining = true;
      for (const client of wss.clients) client.close(CLOSE.goingAway, 'server shutting down');
      await webrtc.close();
      for (const ext of extensions) await ext.drain?.();
      await new Promise<void>((ok) => {
        http.close(() => ok());
        http.closeAllConnections();
      });
      wss.close();
      unobserve();
      unwatch();
      if (ownEngine) await engine.close();
    })());

  return { url: `http://${host}:${port}`, port, ctx, streams: registry, http, close };
}


/**
 * The HTTP + WebSocket server: express for the API, the UI and the MJPEG outputs, ws for streams.
 * startServer() is what `npm start` and the tests call.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { Engine } from '../pipelines/engine.ts';
import { authMiddleware, corsMiddleware } from './auth.ts';
import { checkKeyStrength, DEFAULT_CONFIG, type ServerConfig } from './config.ts';
import { createContext, type AppContext } from './context.ts';
import { errorHandler, notFound } from './http-errors.ts';
import { createLogger, requestLogger, type Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { createRateLimits } from './rate-limits.ts';
import { requestGuards } from './request-guards.ts';
import { securityHeaders } from './security-headers.ts';
import { InFlightRequests, refuseWhileDraining } from './shutdown.ts';
import { StreamRegistry } from './streams/registry.ts';
import { streamRoutes } from './streams/routes.ts';
import { attachStreamServer, type StreamSocketHandler } from './streams/ws.ts';
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
  /**
   * Graceful: refuse new work (503 + Retry-After), end streams with 1001, let jobs checkpoint, give HTTP requests
   * in flight config.shutdownGraceMs to finish (then 503 them), close sockets.
   */
  close(): Promise<void>;
}

/** Hooks other parts of the server plug in (the batch API mounts its router and job runner here, a cluster its node). */
export interface ServerExtension {
  readonly router: express.Router;
  /**
   * A cluster gateway's relayed streams: the streams its clients see (WHEP serves these; WHIP ingest, which
   * runs a session where it lands, is off), and its stream routes in place of the built-in ones.
   */
  readonly relayed?: StreamRegistry;
  readonly streamRouter?: express.Router;
  /** WebSocket paths in place of the built-in /v1/stream (a cluster gateway relays it to workers). */
  readonly sockets?: Readonly<Record<string, StreamSocketHandler>>;
  /** Once listening. */
  start?(server: { readonly url: string; readonly port: number }): Promise<void>;
  /** First on close, before any socket closes: tell others this node is going (a cluster places nothing more on it). */
  leave?(): Promise<void>;
  drain?(): Promise<void>;
  /** Last on close, once HTTP has stopped: connections to shared services. */
  stop?(): Promise<void>;
}
export type ExtensionFactory = (ctx: AppContext, streams: StreamRegistry) => ServerExtension;

export async function startServer(
  overrides: Partial<ServerConfig> = {},
  options: { engine?: Engine; log?: Logger; extensions?: readonly ExtensionFactory[] } = {},
): Promise<RunningServer> {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...overrides };
  checkKeyStrength(config);
  const log = options.log ?? createLogger({ service: 'streamdiffusion-node' });
  const ownEngine = !options.engine;
  const engine =
    options.engine ??
    (await Engine.load(config.modelDir, {
      provider: config.provider,
      threads: config.threads,
      workers: config.workers,
      adapters: { uploadDir: join(config.dataDir, 'adapters'), maxVariants: config.maxVariants },
    }));
  const metrics = new Metrics(true);
  const inflight = new InFlightRequests();
  const ctx = createContext(config, engine, log, metrics, inflight.signal);
  // the model calls' queue: its share rule from the config, its waits and misses into the metrics
  const dispatcher = engine.pack.sessions.dispatcher;
  dispatcher?.setMinShare(config.backgroundShare);
  const unobserve = dispatcher ? metrics.observeDispatcher(dispatcher) : () => undefined;
  const unwatch = dispatcher ? ctx.capacity.watch(dispatcher) : () => undefined;
  const registry = new StreamRegistry({ maxStreams: config.maxStreams, maxPerClient: config.maxStreamsPerClient, maxArea: config.maxLatentArea }, engine.size({}));
  const limits = createRateLimits(config);
  const extensions = (options.extensions ?? []).map((make) => make(ctx, registry));

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(requestLogger(log));
  app.use(securityHeaders());
  // Host (DNS rebinding) and Origin (cross-site requests) before anything answers
  app.use(requestGuards(config));
  app.use(corsMiddleware(config));
  app.get('/health', (_req, res) => {
    res.json({ status: ctx.draining ? 'draining' : 'ok', model: engine.pack.name, streams: registry.size, unet_queue: ctx.batcher.waiting, capacity: ctx.capacity.snapshot() });
  });
  // limits before the key check, so failed keys count
  app.use(limits.requests);
  app.use(limits.authFailures);
  app.use(authMiddleware(config));
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use((_req, _res, next) => {
    try {
      refuseWhileDraining(ctx.draining);
      next();
    } catch (error) {
      next(error);
    }
  });
  app.use(inflight.track);
  app.use(express.json({ limit: '50mb' }));
  // a cluster gateway's clients see the streams it relays, not sessions running here
  const relaying = extensions.find((e) => e.relayed);
  app.use(relaying?.streamRouter ?? streamRoutes(registry, log));
  const webrtc = webrtcRoutes(ctx, relaying?.relayed ?? registry, { whip: !relaying });
  app.use(webrtc.router);
  app.use(modelRoutes(ctx));
  for (const ext of extensions) app.use(ext.router);
  app.use(express.static(WEB_DIR, { index: 'index.html', extensions: ['html'] }));
  app.use(notFound);
  app.use(errorHandler(log));

  const http = createServer(app);
  const sockets = extensions.find((e) => e.sockets)?.sockets;
  const wss = attachStreamServer(http, ctx, registry, limits, ...(sockets ? [sockets] : []));
  await new Promise<void>((ok, fail) => {
    http.once('error', fail);
    http.listen(config.port, config.host, () => ok());
  });
  const port = (http.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  for (const ext of extensions) await ext.start?.({ url, port });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      (ctx as { draining: boolean }).draining = true;
      for (const ext of extensions) await ext.leave?.();
      for (const client of wss.clients) client.close(CLOSE.goingAway, 'server shutting down');
      await webrtc.close();
      for (const ext of extensions) await ext.drain?.();
      const { finished } = await inflight.drain(http, config.shutdownGraceMs);
      if (!finished) log.warn('requests still running after the grace period were answered 503', { grace_ms: config.shutdownGraceMs });
      wss.close();
      limits.close();
      unobserve();
      unwatch();
      for (const ext of extensions) await ext.stop?.();
      if (ownEngine) await engine.close();
    })());

  return { url, port, ctx, streams: registry, http, close };
}


/**
 * A cluster node: the same server with a Redis behind it (--redis URL). Its role decides what it does:
 *   api     a gateway: the HTTP API and the UI; batch jobs and renders go to BullMQ queues; live streams are
 *           placed on workers and relayed (relay.ts); any gateway answers for any job or stream.
 *   worker  takes jobs and renders of its model pack from the queues, and streams from gateways.
 *   all     both in one process.
 * Every node registers in Redis with a heartbeat (nodes.ts), serves /metrics, and on SIGTERM first marks itself
 * draining (nothing new is placed on it), then closes its streams (gateways move them to other workers) and
 * hands its running job back to the queue.
 */
import { randomBytes } from 'node:crypto';
import { freemem, hostname } from 'node:os';
import { Router } from 'express';
import { adapterKey } from '../../models/adapters/choices.ts';
import type { ExtensionFactory } from '../app.ts';
import type { BatchBackendFactory } from '../batch/index.ts';
import { CancelChannel } from '../batch/jobs/bull.ts';
import { ClusterJobs } from '../batch/jobs/cluster-jobs.ts';
import { ClusterRenders } from '../batch/jobs/cluster-renders.ts';
import { RedisJobStore } from '../batch/jobs/redis-store.ts';
import { localRenderer } from '../batch/render.ts';
import { RedisResultStore } from '../batch/results.ts';
import type { ServerConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import { StreamRegistry } from '../streams/registry.ts';
import { localStreams, STREAM_PATH, type StreamSocketHandler } from '../streams/ws.ts';
import { ClusterMetrics } from './metrics.ts';
import { isWorker, NodeRegistry, type NodeDescription } from './nodes.ts';
import { placeStream } from './placement.ts';
import { closeRedis, connectRedis } from './redis.ts';
import type { RelayDeps, RelayedStream } from './relay.ts';
import { relayConnection } from './relay-socket.ts';
import { clusterRoutes, gatewayStreamRoutes } from './routes.ts';
import { StreamDirectory } from './stream-directory.ts';
import { INTERNAL_STREAM_PATH } from './upstream.ts';
import { warmUp } from './warm-up.ts';

/** How often a gateway looks whether the workers of its streams are still alive, ms. */
const WATCH_MS = 250;
/**
 * A worker whose heartbeat expired is left only once its stream has not heard from it for this long either: a
 * worker still sending frames (or answering pings) is slow, not dead, ms.
 */
const SILENT_MS = 1000;
/** How often a gateway renews its streams' directory entries, ms. */
const RENEW_MS = 1000;
/** Adapter combinations a worker advertises as merged: used in this window, at most this many (its cache size). */
const RECENT_ADAPTERS_MS = 10 * 60_000;
const RECENT_ADAPTERS = 4;

export interface ClusterNode {
  readonly id: string;
  /** The batch API's backend: jobs, results and renders through Redis and BullMQ. */
  readonly backend: BatchBackendFactory;
  /** Heartbeats, GET /v1/cluster, the stream relay (gateways) and the internal stream endpoint (workers). */
  readonly extension: ExtensionFactory;
}

export function createClusterNode(config: ServerConfig & { readonly redisUrl: string }, log: Logger): ClusterNode {
  const id = `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const url = config.redisUrl;
  const redis = connectRedis(url, log, `sd-${id}`);
  const bull = connectRedis(url, log, `sd-bull-${id}`, true);
  const events = connectRedis(url, log, `sd-events-${id}`, true);
  const subscriber = connectRedis(url, log, `sd-cancels-${id}`, true);
  const cancels = new CancelChannel(redis, subscriber, log);
  const nodes = new NodeRegistry(redis, id, log);
  const worker = config.role !== 'api';
  const gateway = config.role !== 'worker';
  const settings = { connection: bull, nodeId: id, lockMs: config.jobLockMs };
  let jobs: ClusterJobs | undefined;
  let renders: ClusterRenders | undefined;

  const backend: BatchBackendFactory = (ctx, executors, options) => {
    const pack = ctx.engine.pack.name;
    jobs = new ClusterJobs({ ...settings, redis, store: new RedisJobStore(redis, options.retentionMs), cancels, pack, provider: config.provider, executors: worker ? executors : undefined, minFreeMemoryMb: config.minFreeMemoryMb, jobs: options, log: ctx.log.child({ component: 'jobs' }) });
    renders = new ClusterRenders({
      ...settings,
      redis,
      eventsConnection: events,
      cancels,
      pack,
      plan: (params, mode) => ctx.plan(params, mode),
      hasWorker: async () => (await nodes.list()).some((n) => isWorker(n) && !n.draining && n.pack === pack),
      log,
    });
    return { jobs, renderer: renders, results: new RedisResultStore(redis, options.retentionMs) };
  };

  const extension: ExtensionFactory = (ctx, local) => {
    const self = { id, url: '' };
    // streams gateways place here: they all come from a few gateway addresses, so no per-address limit (each
    // gateway limits its own clients)
    const internal = new StreamRegistry({ maxStreams: config.maxStreams, maxPerClient: config.maxStreams, maxArea: config.maxLatentArea }, ctx.engine.size({}));
    const startedAt = new Date().toISOString();
    let draining = false;
    // a worker's output rate and its adapters, from its sessions
    let lastFrames = { at: performance.now(), out: 0 };
    let fps = 0;
    const recentAdapters = new Map<string, number>();
    const describe = (): NodeDescription => {
      const sessions = [...local.all(), ...internal.all()];
      const out = sessions.reduce((n, s) => n + s.stats.framesOut, 0);
      const now = performance.now();
      if (now - lastFrames.at >= 1000) {
        fps = Math.max(0, out - lastFrames.out) / ((now - lastFrames.at) / 1000);
        lastFrames = { at: now, out };
      }
      for (const s of sessions) {
        const key = adapterKey(s.params.adapters);
        if (key !== '') recentAdapters.set(key, Date.now());
      }
      const adapters = [...recentAdapters].filter(([, at]) => Date.now() - at < RECENT_ADAPTERS_MS).sort((a, b) => b[1] - a[1]).slice(0, RECENT_ADAPTERS).map(([key]) => key);
      return {
        id,
        role: config.role,
        url: self.url,
        pack: ctx.engine.pack.name,
        provider: config.provider,
        started_at: startedAt,
        draining,
        streams: sessions.length,
        max_streams: config.maxStreams,
        fps: Math.round(fps * 10) / 10,
        adapters,
        jobs_active: (jobs?.active ?? 0) + (renders?.active ?? 0),
        jobs_paused: jobs?.paused ?? false,
        memory: { rss_mb: Math.round(process.memoryUsage.rss() / 2 ** 20), free_mb: Math.round(freemem() / 2 ** 20) },
      };
    };
    const directory = new StreamDirectory(redis);
    // a gateway runs no model: its relayed streams hold no latent area here (the worker's registry counts it)
    const relayed = new StreamRegistry<RelayedStream>({ maxStreams: config.maxStreams, maxPerClient: config.maxStreamsPerClient, maxArea: Number.POSITIVE_INFINITY }, ctx.engine.size({}));
    const queues = async () => ({
      ...(jobs ? await jobs.counts() : {}),
      ...(renders ? await renders.counts() : {}),
    });
    const metrics = new ClusterMetrics(ctx.metrics.registry, {
      nodes: async () => {
        const counts: Record<string, number> = {};
        for (const n of await nodes.list()) counts[n.role] = (counts[n.role] ?? 0) + 1;
        return counts;
      },
      queues,
    });
    const relay: RelayDeps = {
      ctx,
      metrics,
      self,
      // the load of each worker: other gateways' streams as the directory has them, this gateway's own as they are
      // now (placements in flight included), counted and chosen in one step so simultaneous moves spread out
      place: async (stream) => {
        const [all, entries] = await Promise.all([nodes.list(), directory.list()]);
        const assigned = new Map<string, number>();
        const count = (worker: string) => assigned.set(worker, (assigned.get(worker) ?? 0) + 1);
        for (const e of entries) if (e.gateway !== id && e.worker !== null) count(e.worker);
        for (const s of relayed.all()) if (s.target) count(s.target.id);
        stream.target = placeStream(all, assigned, stream.needs, stream.excludedIds());
        return stream.target;
      },
      publish: (stream, entry) => void (entry ? directory.put([entry]) : directory.remove({ id: stream.id, name: stream.name ?? null })).catch((error: unknown) => log.warn('stream directory write failed', { stream: stream.id, error: String(error) })),
      claimName: (name, stream) => directory.claimName(name, stream.id),
    };

    // a gateway's streams whose worker stopped beating move; their directory entries are renewed
    let watch: NodeJS.Timeout | undefined;
    let renew: NodeJS.Timeout | undefined;
    const checkWorkers = async () => {
      const streams = relayed.all().filter((s) => s.worker);
      if (streams.length === 0) return;
      const alive = await nodes.alive([...new Set(streams.map((s) => s.worker!.id))]);
      for (const s of streams) if (s.worker && !alive.has(s.worker.id) && s.workerSilentMs >= SILENT_MS) s.move('its worker stopped sending heartbeats');
    };

    const sockets: Record<string, StreamSocketHandler> = {};
    if (gateway) sockets[STREAM_PATH] = (ws, req) => relayConnection(ws, req, relay, relayed);
    if (worker) {
      sockets[INTERNAL_STREAM_PATH] = localStreams(ctx, internal);
      sockets[STREAM_PATH] ??= localStreams(ctx, local); // a worker alone also takes streams directly
    }

    const router = Router();
    router.use(clusterRoutes(id, { nodes: () => nodes.list(), queues }, directory));

    return {
      router,
      sockets,
      ...(gateway ? { relayed, streamRouter: gatewayStreamRoutes(self, relayed, directory, config.apiKey, log) } : {}),
      async start(listening) {
        self.url = config.advertiseUrl ?? advertised(config.host, listening.port);
        if (worker) {
          await warmUp(ctx);
          renders?.startWorker(localRenderer(ctx));
        }
        await nodes.start(describe);
        if (gateway) {
          watch = setInterval(() => void checkWorkers().catch((error: unknown) => log.warn('worker check failed', { error: String(error) })), WATCH_MS);
          renew = setInterval(() => void directory.put(relayed.all().map((s) => s.entry())).catch(() => undefined), RENEW_MS);
          watch.unref();
          renew.unref();
        }
        log.info('cluster node up', { node: id, role: config.role, url: self.url });
      },
      async leave() {
        draining = true;
        await nodes.beat(); // gateways place nothing more here before this node's streams close
      },
      async drain() {
        clearInterval(watch);
        clearInterval(renew);
        await renders?.close();
      },
      async stop() {
        await nodes.stop();
        await Promise.all([redis, bull, events, subscriber].map(closeRedis));
      },
    };
  };

  return { id, backend, extension };
}

/** The address others reach a node at when --advertise-url is not given: its host (or machine name) and port. */
function advertised(host: string, port: number): string {
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const name = wildcard ? hostname() : host.includes(':') ? `[${host}]` : host;
  return `http://${name}:${port}`;
}

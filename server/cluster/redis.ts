/**
 * The cluster's Redis: connections, and the keys every node agrees on. Our keys start with `sd:`; BullMQ keeps
 * its queues under `bull:`.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../log.ts';

/**
 * A connection. Commands fail after a few retries while Redis is away (a request gets a 503, it does not
 * hang); `blocking` connections (BullMQ's workers and event readers) wait for Redis to come back instead.
 */
export function connectRedis(url: string, log: Logger, name: string, blocking = false): Redis {
  const redis = new Redis(url, { connectionName: name, maxRetriesPerRequest: blocking ? null : 3, enableOfflineQueue: true });
  let reported = '';
  redis.on('error', (error: Error) => {
    if (error.message === reported) return; // one line per distinct failure, not one per retry
    reported = error.message;
    log.warn('redis connection error', { connection: name, error: error.message });
  });
  redis.on('ready', () => (reported = ''));
  return redis;
}

/** Closes a connection, waiting for its replies; a connection that is down is simply dropped. */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
  else redis.disconnect();
}

export const KEYS = {
  /** A live node's description (NodeInfo JSON), with a short expiry its heartbeat renews. */
  node: (id: string) => `sd:node:${id}`,
  /** Ids of nodes that registered (dead ones are dropped when their key is gone). */
  nodes: 'sd:nodes',
  /** A running stream's place (StreamEntry JSON), renewed by the gateway that relays it. */
  stream: (id: string) => `sd:stream:${id}`,
  streams: 'sd:streams',
  /** A stream name -> the id of the stream that has it (names are unique in the cluster). */
  streamName: (name: string) => `sd:stream-name:${name}`,
  /** A job record (JobRecord JSON). */
  job: (id: string) => `sd:job:${id}`,
  /** A job's files: a hash of name -> bytes. */
  jobFiles: (id: string) => `sd:job:${id}:files`,
  /** Job ids by creation time (a sorted set). */
  jobs: 'sd:jobs',
  /** Unfinished jobs per client (a hash): a client's next job queues behind its own earlier ones. */
  clientLoad: 'sd:jobs:client-load',
  /** Pub/sub: ids of jobs and renders to stop, heard by every worker. */
  cancel: 'sd:cancel',
  /** An interactive render's image `index` (raw RGB), kept briefly until its gateway reads it. */
  renderImage: (id: string, index: number) => `sd:render:${id}:${index}`,
  /** An image returned by URL (OpenAI's response_format "url"). */
  result: (name: string) => `sd:result:${name}`,
} as const;

/**
 * The JSON values of a set's members that have not expired: entries (`keyOf(id)`) expire by themselves, and
 * ids whose entry is gone are dropped from the set here.
 */
export async function liveEntries<T>(redis: Redis, set: string, keyOf: (id: string) => string): Promise<T[]> {
  const ids = await redis.smembers(set);
  if (ids.length === 0) return [];
  const values = await redis.mget(ids.map(keyOf));
  const gone = ids.filter((_, i) => values[i] === null);
  if (gone.length > 0) await redis.srem(set, ...gone);
  return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as T);
}

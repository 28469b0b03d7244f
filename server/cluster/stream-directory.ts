/**
 * Where each live stream of the cluster is: the gateway that holds its client's socket (and serves its MJPEG,
 * snapshot and push URLs) and the worker that runs it. Entries expire unless their gateway renews them, so a
 * dead gateway's streams leave the directory by themselves. Stream names are claimed here: unique cluster-wide.
 */
import type { Redis } from 'ioredis';
import { KEYS, liveEntries } from './redis.ts';

/** Entries live this long without renewal (several gateway heartbeats), ms. */
export const STREAM_TTL_MS = 5000;

export interface StreamEntry {
  readonly id: string;
  readonly name: string | null;
  /** The gateway node relaying it, and its address. */
  readonly gateway: string;
  readonly gateway_url: string;
  /** The worker node running it (null while it moves). */
  readonly worker: string | null;
  readonly mode: 'img2img' | 'txt2img';
  readonly width: number;
  readonly height: number;
  readonly started_at: string;
  /** Times it moved to another worker. */
  readonly failovers: number;
}

export class StreamDirectory {
  constructor(private readonly redis: Redis) {}

  /** Writes (or renews) entries. */
  async put(entries: readonly StreamEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const tx = this.redis.multi();
    for (const e of entries) {
      tx.set(KEYS.stream(e.id), JSON.stringify(e), 'PX', STREAM_TTL_MS);
      tx.sadd(KEYS.streams, e.id);
      if (e.name !== null) tx.set(KEYS.streamName(e.name), e.id, 'PX', STREAM_TTL_MS);
    }
    await tx.exec();
  }

  async get(id: string): Promise<StreamEntry | undefined> {
    const value = await this.redis.get(KEYS.stream(id));
    return value === null ? undefined : (JSON.parse(value) as StreamEntry);
  }

  async remove(entry: Pick<StreamEntry, 'id' | 'name'>): Promise<void> {
    const tx = this.redis.multi().del(KEYS.stream(entry.id)).srem(KEYS.streams, entry.id);
    await tx.exec();
    if (entry.name !== null) await this.releaseName(entry.name, entry.id);
  }

  /** Every running stream of the cluster (expired entries are dropped from the set). */
  list(): Promise<StreamEntry[]> {
    return liveEntries<StreamEntry>(this.redis, KEYS.streams, KEYS.stream);
  }

  /** Streams per worker, as placed. */
  async assigned(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const e of await this.list()) if (e.worker !== null) counts.set(e.worker, (counts.get(e.worker) ?? 0) + 1);
    return counts;
  }

  /** Claims a name for stream `id`; false when another running stream has it. */
  async claimName(name: string, id: string): Promise<boolean> {
    return (await this.redis.set(KEYS.streamName(name), id, 'PX', STREAM_TTL_MS, 'NX')) === 'OK';
  }

  /** The id of the running stream with this name. */
  async byName(name: string): Promise<string | undefined> {
    return (await this.redis.get(KEYS.streamName(name))) ?? undefined;
  }

  /** Frees a name if stream `id` still holds it. */
  private async releaseName(name: string, id: string): Promise<void> {
    // compare-and-delete in one step: a name taken over by a newer stream meanwhile stays with it
    await this.redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0", 1, KEYS.streamName(name), id);
  }
}

/**
 * Images returned by URL (OpenAI's response_format "url"), served at GET /v1/images/results/<name> until the
 * retention limit: stored under <dataDir>/results/<uuid>.<ext> on one node (FileResultStore), in Redis in a
 * cluster (server/cluster/redis-results.ts), so that every node serves them.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { ServiceError } from '../../models/errors.ts';
import { KEYS } from '../cluster/redis.ts';

const RESULT_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(png|jpeg|webp)$/;

export type ResultFormat = 'png' | 'jpeg' | 'webp';

export interface ResultStore {
  /** Stores bytes, returns the result's name. */
  put(bytes: Uint8Array, ext: ResultFormat): Promise<string>;
  /** Where a stored result is read from (a file, or its bytes); not_found for any other name. */
  locate(name: string): Promise<{ readonly path: string } | { readonly bytes: Buffer }>;
  /** Deletes what is past retention. */
  prune(): Promise<void>;
}

/** A new result's name: a UUID and the format's extension. */
export function resultName(ext: ResultFormat): string {
  return `${randomUUID()}.${ext}`;
}

/** not_found unless `name` is of our making (no path reaches outside the store). */
export function checkResultName(name: string): string {
  if (!RESULT_NAME.test(name)) throw new ServiceError('not_found', `no result ${name}`, { field: 'name' });
  return name;
}

export class FileResultStore implements ResultStore {
  constructor(
    readonly root: string,
    readonly retentionMs: number,
  ) {}

  /** Stores bytes, returns the file name. */
  async put(bytes: Uint8Array, ext: ResultFormat): Promise<string> {
    await mkdir(this.root, { recursive: true });
    const name = resultName(ext);
    const tmp = join(this.root, `${name}.tmp`);
    await writeFile(tmp, bytes);
    await rename(tmp, join(this.root, name));
    return name;
  }

  async locate(name: string): Promise<{ path: string }> {
    const path = join(this.root, checkResultName(name));
    if (!(await stat(path).then((s) => s.isFile(), () => false))) throw new ServiceError('not_found', `no result ${name}`, { field: 'name' });
    return { path };
  }

  /** Deletes results older than the retention limit (and temporary files). */
  async prune(now = Date.now()): Promise<void> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(this.root, name);
      const s = await stat(path).catch(() => undefined);
      const age = s ? now - s.mtimeMs : 0;
      if (s && (age > this.retentionMs || (name.endsWith('.tmp') && age > 60_000))) await rm(path, { force: true });
    }
  }
}

/** A cluster's results: in Redis with the retention time as expiry, so any node serves any result. */
export class RedisResultStore implements ResultStore {
  constructor(
    private readonly redis: Redis,
    readonly retentionMs: number,
  ) {}

  async put(bytes: Uint8Array, ext: ResultFormat): Promise<string> {
    const name = resultName(ext);
    await this.redis.set(KEYS.result(name), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'PX', this.retentionMs);
    return name;
  }

  async locate(name: string): Promise<{ bytes: Buffer }> {
    const bytes = await this.redis.getBuffer(KEYS.result(checkResultName(name)));
    if (bytes === null) throw new ServiceError('not_found', `no result ${name}`, { field: 'name' });
    return { bytes };
  }

  /** Redis expires results by itself. */
  async prune(): Promise<void> {}
}

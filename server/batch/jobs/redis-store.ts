/**
 * Job records and files in Redis, for a cluster: every API node reads any job, and a worker on another machine
 * reads the job's input and writes its results where all nodes reach them. A record is one JSON value; a job's
 * files are one hash (name -> bytes), so each file is written whole or not at all. Finished jobs expire with
 * their files after the retention time (Redis deletes them; no node has to).
 *
 * Chosen over a shared folder or an S3 store because the cluster needs Redis anyway and results here are
 * images of a few hundred KB; a file is limited to MAX_FILE_BYTES (videos larger than that: give a server-side
 * `path` on a folder every worker mounts).
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { ServiceError } from '../../../models/errors.ts';
import { KEYS } from '../../cluster/redis.ts';
import { FINISHED, isJobId, JOB_STATUSES, type JobFiles, type JobRecord, type JobStore, type LocalInput, type LocalOutput } from './store.ts';

/** Largest job file kept in Redis (its own limit on one value is 512 MB). */
export const MAX_FILE_BYTES = 256 * 2 ** 20;

/** Records read per round trip when listing. */
const SCAN_BATCH = 500;

export class RedisJobStore implements JobStore {
  constructor(
    private readonly redis: Redis,
    /** Finished jobs (and their files) expire this long after their last save, ms. */
    readonly retentionMs: number,
  ) {}

  async init(): Promise<void> {}

  async save(record: JobRecord): Promise<void> {
    const tx = this.redis.multi().set(KEYS.job(record.id), JSON.stringify(record)).zadd(KEYS.jobs, Date.parse(record.created_at), record.id);
    if (FINISHED.includes(record.status)) tx.pexpire(KEYS.job(record.id), this.retentionMs).pexpire(KEYS.jobFiles(record.id), this.retentionMs);
    await tx.exec();
  }

  async load(id: string): Promise<JobRecord | undefined> {
    const value = await this.redis.get(KEYS.job(checkId(id)));
    return value === null ? undefined : (JSON.parse(value) as JobRecord);
  }

  async scan(onBroken: (name: string, error: unknown) => void): Promise<JobRecord[]> {
    const ids = await this.redis.zrange(KEYS.jobs, 0, '-1');
    const records: JobRecord[] = [];
    for (let i = 0; i < ids.length; i += SCAN_BATCH) {
      const chunk = ids.slice(i, i + SCAN_BATCH);
      const values = await this.redis.mget(chunk.map((id) => KEYS.job(id)));
      const expired: string[] = [];
      for (const [j, value] of values.entries()) {
        if (value === null) {
          expired.push(chunk[j]!);
          continue;
        }
        try {
          const record = JSON.parse(value) as JobRecord;
          if (record.id !== chunk[j] || !JOB_STATUSES.includes(record.status)) throw new Error('record does not match its key');
          records.push(record);
        } catch (error) {
          onBroken(chunk[j]!, error);
        }
      }
      if (expired.length > 0) await this.redis.zrem(KEYS.jobs, ...expired);
    }
    return records;
  }

  async remove(id: string): Promise<void> {
    await this.redis.multi().del(KEYS.job(id), KEYS.jobFiles(id)).zrem(KEYS.jobs, id).exec();
  }

  files(id: string): JobFiles {
    return new RedisFiles(this.redis, KEYS.jobFiles(checkId(id)));
  }
}

function checkId(id: string): string {
  if (!isJobId(id)) throw new ServiceError('bad_request', `id: "${id}" is not a job id`, { field: 'id' });
  return id;
}

/** A job's files as fields of one hash. */
class RedisFiles implements JobFiles {
  constructor(
    private readonly redis: Redis,
    private readonly key: string,
  ) {}

  async has(name: string): Promise<boolean> {
    return (await this.redis.hexists(this.key, name)) === 1;
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    if (bytes.length > MAX_FILE_BYTES) {
      throw new ServiceError('too_large', `${name} is ${bytes.length} bytes; a cluster keeps job files of at most ${MAX_FILE_BYTES} bytes in Redis (use a server-side path for large videos)`);
    }
    await this.redis.hset(this.key, name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  async move(name: string, path: string): Promise<void> {
    const { size } = await stat(path);
    if (size > MAX_FILE_BYTES) throw new ServiceError('too_large', `the upload is ${size} bytes; a cluster keeps job files of at most ${MAX_FILE_BYTES} bytes (use a server-side path for large videos)`, { field: 'video' });
    await this.write(name, await readFile(path));
    await rm(path, { force: true });
  }

  async read(name: string): Promise<Buffer> {
    const bytes = await this.redis.hgetBuffer(this.key, name);
    if (bytes === null) throw new ServiceError('not_found', `the job has no file ${name}`, { field: 'file' });
    return bytes;
  }

  async input(name: string): Promise<LocalInput> {
    const dir = await mkdtemp(join(tmpdir(), 'sd-job-'));
    const path = join(dir, name);
    await writeFile(path, await this.read(name));
    return { path, release: () => rm(dir, { recursive: true, force: true }) };
  }

  async output(name: string): Promise<LocalOutput> {
    const dir = await mkdtemp(join(tmpdir(), 'sd-job-'));
    const path = join(dir, `${randomUUID()}-${name}`);
    const discard = () => rm(dir, { recursive: true, force: true });
    return {
      path,
      commit: async () => {
        await this.write(name, await readFile(path));
        await discard();
      },
      discard,
    };
  }

  async locate(name: string): Promise<{ bytes: Buffer }> {
    return { bytes: await this.read(name) };
  }
}

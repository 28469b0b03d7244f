/**
 * Job persistence: one folder per job under <dataDir>/jobs/<id>/ holding job.json (the record, replaced
 * atomically: written to a temporary file, then renamed over) and the job's input and results beside it.
 * A crash leaves either the old or the new record, never half of one.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ServiceError } from '../../../models/errors.ts';

export const JOB_STATUSES = ['starting', 'processing', 'succeeded', 'failed', 'canceled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED: readonly JobStatus[] = ['succeeded', 'failed', 'canceled'];

/** A UUID as crypto.randomUUID makes: the only shape a job id in a path may have (no traversal). */
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A job folder with no job.json this old is a leftover of a request that died mid-way. */
const UNACKNOWLEDGED_MS = 3600 * 1000;

export function isJobId(id: string): boolean {
  return JOB_ID.test(id);
}

export function newJobId(): string {
  return randomUUID();
}

export interface WebhookState {
  readonly url: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  last_error: string | null;
}

export interface JobRecord<Request = unknown> {
  readonly version: 1;
  readonly id: string;
  readonly kind: 'images' | 'video';
  status: JobStatus;
  readonly created_at: string;
  started_at: string | null;
  completed_at: string | null;
  /** 0..1 */
  progress: number;
  /** The request as validated, seed resolved: a resumed job renders exactly what was accepted. */
  readonly request: Request;
  /** File names in the job's folder, in order. */
  results: string[];
  error: { code: string; message: string } | null;
  webhook: WebhookState | null;
  /** Origin (scheme://host) of the request that created the job, for absolute URLs in webhooks. */
  readonly base_url: string;
  stats: Record<string, number | boolean>;
  /** Where the render differs from the request (guidance brought into the model's range ...); absent in older records. */
  notes?: string[];
}

export class JobStore {
  constructor(readonly root: string) {}

  dir(id: string): string {
    if (!isJobId(id)) throw new ServiceError('bad_request', `id: "${id}" is not a job id`, { field: 'id' });
    return join(this.root, id);
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }

  /** Writes job.json atomically (temporary file + rename). */
  async save(record: JobRecord): Promise<void> {
    const dir = this.dir(record.id);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `job.json.${randomUUID()}.tmp`);
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(`${JSON.stringify(record, null, 1)}\n`);
      await file.sync(); // on disk before it replaces the old record
    } finally {
      await file.close();
    }
    await rename(tmp, join(dir, 'job.json'));
  }

  async load(id: string): Promise<JobRecord> {
    return JSON.parse(await readFile(join(this.dir(id), 'job.json'), 'utf8')) as JobRecord;
  }

  /** Every job folder with a readable record; broken or foreign folders are reported, not fatal. */
  async scan(onBroken: (name: string, error: unknown) => void): Promise<JobRecord[]> {
    const records: JobRecord[] = [];
    for (const entry of await readdir(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory() || !isJobId(entry.name)) continue;
      try {
        const record = await this.load(entry.name);
        if (record.id !== entry.name || !JOB_STATUSES.includes(record.status)) throw new Error('record does not match its folder');
        await this.removeTemporaries(entry.name);
        records.push(record);
      } catch (error) {
        if (await this.removeIfUnacknowledged(entry.name, error)) continue;
        onBroken(entry.name, error);
      }
    }
    return records;
  }

  /**
   * A folder without job.json belongs to a request that died before its job was saved (and so was never
   * acknowledged): removed once it is old enough that no request can still be filling it.
   */
  private async removeIfUnacknowledged(id: string, error: unknown): Promise<boolean> {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    const age = Date.now() - (await stat(this.dir(id))).mtimeMs;
    if (age < UNACKNOWLEDGED_MS) return false;
    await this.remove(id);
    return true;
  }

  /** Leftovers of writes a crash interrupted (job.json.*.tmp, *.partial). */
  private async removeTemporaries(id: string): Promise<void> {
    const dir = this.dir(id);
    for (const name of await readdir(dir)) {
      if (name.endsWith('.tmp') || name.endsWith('.partial')) await rm(join(dir, name), { force: true });
    }
  }

  async remove(id: string): Promise<void> {
    await rm(this.dir(id), { recursive: true, force: true });
  }
}

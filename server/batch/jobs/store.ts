/**
 * Job persistence. The store interface (JobStore, JobFiles) and the single-node default: one folder per job
 * under <dataDir>/jobs/<id>/ holding job.json (the record, replaced atomically: written to a temporary file,
 * then renamed over) and the job's input and results beside it. A crash leaves either the old or the new
 * record, never half of one. Folders a scan cannot use are dealt with once: a folder without job.json (a request
 * that died before its job was saved) is deleted, one whose job.json is unreadable is moved to
 * <dataDir>/jobs-broken/ for a person to look at. A cluster keeps records and files in Redis instead
 * (redis-store.ts).
 */
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ServiceError } from '../../../models/errors.ts';

export const JOB_STATUSES = ['starting', 'processing', 'succeeded', 'failed', 'canceled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED: readonly JobStatus[] = ['succeeded', 'failed', 'canceled'];

/** A UUID as crypto.randomUUID makes: the only shape a job id in a path may have (no traversal). */
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Where folders with an unreadable job.json are moved (beside jobs/, so a scan never sees them again). */
export const BROKEN_JOBS_DIR = 'jobs-broken';

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
  /** The address of the client that created it (queued jobs are limited per client); absent in older records. */
  readonly client?: string;
  stats: Record<string, number | boolean>;
  /** The current (or last) run's start, for the ETA: wall time (ms since the epoch) and progress then. */
  run?: RunStart;
  /** Where the render differs from the request (guidance brought into the model's range ...); absent in older records. */
  notes?: string[];
}

export interface RunStart {
  readonly since: number;
  readonly fromProgress: number;
}

/** A local file holding one of a job's files while a tool (ffmpeg) reads it. */
export interface LocalInput {
  readonly path: string;
  /** Done reading (a temporary copy is deleted). */
  release(): Promise<void>;
}

/** A local file a tool (ffmpeg) writes one of a job's files to. */
export interface LocalOutput {
  readonly path: string;
  /** Stores what was written under the file's name. */
  commit(): Promise<void>;
  /** Drops it (the tool failed). */
  discard(): Promise<void>;
}

/** A job's input and result files, by name: a folder on one machine, blobs every node reaches in a cluster. */
export interface JobFiles {
  has(name: string): Promise<boolean>;
  /** Stores bytes under `name`, atomically: a reader sees all of them or no file. */
  write(name: string, bytes: Uint8Array): Promise<void>;
  /** Moves a local file (an upload) in under `name`. */
  move(name: string, path: string): Promise<void>;
  read(name: string): Promise<Buffer>;
  /** A local path to read `name` from (ffmpeg reads inputs by path). */
  input(name: string): Promise<LocalInput>;
  /** A local path to write `name` to. */
  output(name: string): Promise<LocalOutput>;
  /** Where a response reads `name` from: a file to send, or the bytes. */
  locate(name: string): Promise<{ readonly path: string } | { readonly bytes: Buffer }>;
}

/** Where job records and files are kept (FileJobStore here; RedisJobStore for a cluster). */
export interface JobStore {
  init(): Promise<void>;
  save(record: JobRecord): Promise<void>;
  /** The record, or undefined when there is no such job (deleted, or past retention). */
  load(id: string): Promise<JobRecord | undefined>;
  /** Every readable record; unreadable ones are reported and skipped. */
  /** Readable records; `onBroken` hears of each unusable one (`what` became of it, where the store sets it aside). */
  scan(onBroken: (name: string, error: unknown, what?: 'deleted' | 'moved') => void, since?: number): Promise<JobRecord[]>;
  remove(id: string): Promise<void>;
  files(id: string): JobFiles;
}

/** The files of one job folder. */
class FolderFiles implements JobFiles {
  constructor(private readonly dir: string) {}

  has(name: string): Promise<boolean> {
    return stat(join(this.dir, name)).then(
      (s) => s.isFile(),
      () => false,
    );
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `${name}.partial`);
    await writeFile(tmp, bytes);
    await rename(tmp, join(this.dir, name));
  }

  async move(name: string, path: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await rename(path, join(this.dir, name)).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EXDEV') throw error;
      await copyFile(path, join(this.dir, name)); // uploads on another file system
    });
  }

  read(name: string): Promise<Buffer> {
    return readFile(join(this.dir, name));
  }

  async input(name: string): Promise<LocalInput> {
    return { path: join(this.dir, name), release: async () => undefined };
  }

  /** Written in place: the video renderer itself writes a .partial file and renames it when complete. */
  async output(name: string): Promise<LocalOutput> {
    await mkdir(this.dir, { recursive: true });
    const path = join(this.dir, name);
    return { path, commit: async () => undefined, discard: () => rm(path, { force: true }) };
  }

  async locate(name: string): Promise<{ path: string }> {
    return { path: join(this.dir, name) };
  }
}

export class FileJobStore implements JobStore {
  constructor(readonly root: string) {}

  files(id: string): JobFiles {
    return new FolderFiles(this.dir(id));
  }

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

  async load(id: string): Promise<JobRecord | undefined> {
    return this.read(id).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
  }

  private async read(id: string): Promise<JobRecord> {
    return JSON.parse(await readFile(join(this.dir(id), 'job.json'), 'utf8')) as JobRecord;
  }

  /**
   * Every job folder with a readable record. A folder without job.json that is older than `since` (the start of
   * this process: no request of ours can still be filling it) is deleted; one with an unreadable record is moved
   * to jobs-broken/. Both are reported through `onSetAside` once, when it happens.
   */
  async scan(onSetAside: (name: string, error: unknown, what?: 'deleted' | 'moved') => void, since = Date.now()): Promise<JobRecord[]> {
    const records: JobRecord[] = [];
    for (const entry of await readdir(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory() || !isJobId(entry.name)) continue;
      try {
        const record = await this.read(entry.name);
        if (record.id !== entry.name || !JOB_STATUSES.includes(record.status)) throw new Error('record does not match its folder');
        await this.removeTemporaries(entry.name);
        records.push(record);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          if ((await stat(this.dir(entry.name))).mtimeMs >= since) continue; // a request of this process is filling it
          await this.remove(entry.name);
          onSetAside(entry.name, error, 'deleted');
        } else {
          const broken = join(dirname(this.root), BROKEN_JOBS_DIR);
          await mkdir(broken, { recursive: true });
          await rename(this.dir(entry.name), join(broken, entry.name));
          onSetAside(entry.name, error, 'moved');
        }
      }
    }
    return records;
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

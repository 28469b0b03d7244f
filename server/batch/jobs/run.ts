/**
 * One run of a job, the same on a single node (manager.ts) and on a cluster worker (cluster-jobs.ts): mark it
 * processing, run its kind's executor with progress saved now and then, then finish it as succeeded, canceled
 * or failed, or leave it to resume (an abort for DRAIN: the node is shutting down). Also the public view.
 */
import { redactText } from '../../log.ts';
import { toServiceError } from '../../../models/errors.ts';
import type { Logger } from '../../log.ts';
import type { JobFiles, JobRecord, JobStatus } from './store.ts';

/** Abort reasons a running job's signal carries. */
export const DRAIN = 'drain';
export const CANCEL = 'cancel';

export interface RunningJob {
  readonly record: JobRecord;
  /** Its input and results. */
  readonly files: JobFiles;
  readonly signal: AbortSignal;
  /** Reports progress 0..1 (saved at most every progressSaveMs) and optional stats. */
  progress(fraction: number, stats?: Record<string, number | boolean>): void;
  /** Persists the record now (after adding results). */
  save(): Promise<void>;
}

export type Executor = (job: RunningJob) => Promise<void>;

export interface RunOptions {
  readonly executor: Executor;
  readonly files: JobFiles;
  readonly signal: AbortSignal;
  /** Saves the record (the store's order of writes is the caller's business). */
  readonly persist: (record: JobRecord) => Promise<void>;
  /** Progress is saved at most this often, ms. */
  readonly progressSaveMs: number;
  readonly log: Logger;
}

/** The end of a run: finished (succeeded, failed, canceled), or interrupted by a drain (to be resumed). */
export type RunOutcome = 'finished' | 'interrupted';

export async function runJob(record: JobRecord, options: RunOptions): Promise<RunOutcome> {
  const { signal, persist, log } = options;
  // 1. mark it running (persisted: a crash from here on resumes it)
  record.status = 'processing';
  record.started_at ??= new Date().toISOString();
  record.run = { since: Date.now(), fromProgress: record.progress };
  await persist(record);
  let lastSave = performance.now();
  const job: RunningJob = {
    record,
    files: options.files,
    signal,
    progress: (fraction, stats) => {
      record.progress = Math.max(0, Math.min(1, fraction));
      if (stats) record.stats = { ...record.stats, ...stats };
      if (performance.now() - lastSave < options.progressSaveMs) return;
      lastSave = performance.now();
      void persist(record).catch(() => undefined);
    },
    save: () => persist(record),
  };
  // 2. run it; an abort is a cancel or a drain, anything else a failure
  try {
    await options.executor(job);
    record.progress = 1;
    await finishJob(record, 'succeeded', null, persist);
  } catch (error) {
    if (signal.aborted && signal.reason === DRAIN) {
      record.status = 'starting';
      await persist(record);
      log.info('job interrupted by shutdown; it resumes where it stopped', { job: record.id, progress: record.progress });
      return 'interrupted';
    }
    if (signal.aborted) {
      await finishJob(record, 'canceled', null, persist);
    } else {
      const e = toServiceError(error);
      if (e.status >= 500) log.error('job failed', { job: record.id, code: e.code, error: String((error as Error)?.stack ?? error) });
      await finishJob(record, 'failed', { code: e.code, message: e.message }, persist);
    }
  }
  return 'finished';
}

export async function finishJob(record: JobRecord, status: JobStatus, error: JobRecord['error'], persist: (record: JobRecord) => Promise<void>): Promise<void> {
  record.status = status;
  record.error = error;
  record.completed_at = new Date().toISOString();
  await persist(record);
}

export interface JobView {
  id: string;
  kind: JobRecord['kind'];
  status: JobStatus;
  progress: number;
  eta_seconds: number | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  urls: string[];
  error: JobRecord['error'];
  stats: JobRecord['stats'];
  webhook: { status: string; attempts: number; last_error: string | null } | null;
  request: unknown;
  notes: string[];
}

/** The public view of a job; result URLs are absolute on `base` (scheme://host). */
export function jobView(record: JobRecord, base: string = record.base_url, now = Date.now()): JobView {
  return {
    id: record.id,
    kind: record.kind,
    status: record.status,
    progress: record.progress,
    eta_seconds: eta(record, now),
    created_at: record.created_at,
    started_at: record.started_at,
    completed_at: record.completed_at,
    urls: record.results.map((name) => `${base}/v1/jobs/${record.id}/results/${name}`),
    error: record.error,
    stats: record.stats,
    webhook: record.webhook ? { status: record.webhook.status, attempts: record.webhook.attempts, last_error: record.webhook.last_error && redactText(record.webhook.last_error) } : null,
    request: record.request,
    notes: record.notes ?? [],
  };
}

function eta(record: JobRecord, now: number): number | null {
  if (record.status === 'succeeded') return 0;
  const run = record.run;
  if (record.status !== 'processing' || !run) return null;
  const gained = record.progress - run.fromProgress;
  if (gained <= 0) return null;
  const seconds = (now - run.since) / 1000;
  return Math.round((seconds / gained) * (1 - record.progress) * 10) / 10;
}

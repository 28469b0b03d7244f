/**
 * The job queue: accepted jobs run one at a time, in the order they were accepted, through the executor of
 * their kind. Every change of state is persisted (JobStore) before it is reported, so a restart loses no
 * accepted job: start() resumes jobs that were queued or running. Cancel aborts a running job (its
 * ffmpeg is killed); drain() stops a running job without failing it, so the next start resumes it.
 */
import { ServiceError, toServiceError } from '../../../models/errors.ts';
import type { Logger } from '../../log.ts';
import { deliverWebhook, DEFAULT_WEBHOOK_OPTIONS, type WebhookOptions } from '../webhook.ts';
import { FINISHED, type JobRecord, type JobStatus, type JobStore } from './store.ts';

export interface RunningJob {
  readonly record: JobRecord;
  readonly dir: string;
  readonly signal: AbortSignal;
  /** Reports progress 0..1 (saved at most every progressSaveMs) and optional stats. */
  progress(fraction: number, stats?: Record<string, number | boolean>): void;
  /** Persists the record now (after adding results). */
  save(): Promise<void>;
}

export type Executor = (job: RunningJob) => Promise<void>;

export interface JobManagerOptions {
  /** Finished jobs older than this are deleted at start (and hourly): 7 days. */
  readonly retentionMs: number;
  /** How long drain() waits for a running job to stop, ms. */
  readonly drainTimeoutMs: number;
  /** Progress is written to job.json at most this often, ms. */
  readonly progressSaveMs: number;
  readonly webhook: WebhookOptions;
}

export const DEFAULT_JOB_OPTIONS: JobManagerOptions = Object.freeze({
  retentionMs: 7 * 24 * 3600 * 1000,
  drainTimeoutMs: 10_000,
  progressSaveMs: 1000,
  webhook: DEFAULT_WEBHOOK_OPTIONS,
});

/** How often finished jobs past retention are looked for while running. */
const PRUNE_INTERVAL_MS = 3600 * 1000;

const DRAIN = 'drain';
const CANCEL = 'cancel';

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

interface Running {
  readonly id: string;
  readonly controller: AbortController;
  readonly done: Promise<void>;
  /** Wall time and progress when this run started (for the ETA). */
  readonly since: number;
  readonly fromProgress: number;
}

export class JobManager {
  private readonly records = new Map<string, JobRecord>();
  /** Jobs deleted by remove(): a late save (a webhook's outcome) must not bring their folder back. */
  private readonly removed = new Set<string>();
  private readonly queue: string[] = [];
  private running: Running | undefined;
  private started = false;
  private draining = false;
  private saving: Promise<void> = Promise.resolve();
  private readonly deliveries = new Set<Promise<void>>();
  private pruneTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly store: JobStore,
    private readonly executors: Record<JobRecord['kind'], Executor>,
    private readonly log: Logger,
    readonly options: JobManagerOptions = DEFAULT_JOB_OPTIONS,
  ) {}

  /** Loads the folder: deletes jobs past retention, re-queues queued and interrupted ones, starts running. */
  async start(): Promise<void> {
    if (this.started) return;
    await this.store.init();
    const records = await this.store.scan((name, error) => this.log.warn('skipping unreadable job folder', { job: name, error: String(error) }));
    const removed = await this.prune(records);
    for (const record of records.sort((a, b) => a.created_at.localeCompare(b.created_at))) {
      if (this.records.has(record.id) || removed.has(record.id)) continue; // accepted before start(), or deleted
      this.records.set(record.id, record);
      if (record.status === 'starting' || record.status === 'processing') {
        record.status = 'starting';
        this.queue.push(record.id);
        this.log.info('resuming job', { job: record.id, kind: record.kind, progress: record.progress });
      } else if (record.webhook?.status === 'pending') {
        this.notify(record);
      }
    }
    this.started = true;
    this.pruneTimer = setInterval(() => void this.prune([...this.records.values()]), PRUNE_INTERVAL_MS);
    this.pruneTimer.unref();
    this.pump();
  }

  /** Persists a new job, then queues it. */
  async submit(record: JobRecord): Promise<JobRecord> {
    if (this.draining) throw new ServiceError('unavailable', 'the server is shutting down: no new jobs');
    await this.persist(record);
    this.records.set(record.id, record);
    this.queue.push(record.id);
    this.pump();
    return record;
  }

  get(id: string): JobRecord {
    const record = this.records.get(id);
    if (!record) throw new ServiceError('not_found', `no job ${id}`, { field: 'id' });
    return record;
  }

  /** Every job, newest first (ties by id, so that pages are stable). */
  list(): JobRecord[] {
    return [...this.records.values()].sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id));
  }

  /** Cancels a queued or running job; a finished one is a conflict (remove() deletes it). */
  async cancel(id: string): Promise<JobRecord> {
    const record = this.get(id);
    if (FINISHED.includes(record.status)) throw new ServiceError('conflict', `job ${id} already ${record.status}`, { field: 'id' });
    if (this.running?.id === id) {
      this.running.controller.abort(CANCEL);
      await this.running.done;
      return record;
    }
    this.queue.splice(this.queue.indexOf(id), 1);
    await this.finish(record, 'canceled');
    return record;
  }

  /** Deletes a finished job: its record and its folder (inputs and results). A queued or running one is a conflict. */
  async remove(id: string): Promise<JobRecord> {
    const record = this.get(id);
    if (!FINISHED.includes(record.status)) throw new ServiceError('conflict', `job ${id} is ${record.status}: cancel it first`, { field: 'id' });
    this.records.delete(id);
    this.removed.add(id);
    await this.saving; // a save of this record in flight would recreate its folder
    await this.store.remove(id);
    return record;
  }

  /** Stops taking and running jobs; a running job is interrupted and stays queued on disk. */
  async drain(): Promise<void> {
    this.draining = true;
    clearInterval(this.pruneTimer);
    const running = this.running;
    if (running) {
      running.controller.abort(DRAIN);
      await Promise.race([running.done, new Promise((r) => setTimeout(r, this.options.drainTimeoutMs).unref())]);
    }
    await this.saving;
    await Promise.race([Promise.all(this.deliveries), new Promise((r) => setTimeout(r, this.options.drainTimeoutMs).unref())]);
  }

  /** The public view of a job; result URLs are absolute on `base` (scheme://host). */
  view(record: JobRecord, base: string = record.base_url): JobView {
    return {
      id: record.id,
      kind: record.kind,
      status: record.status,
      progress: record.progress,
      eta_seconds: this.eta(record),
      created_at: record.created_at,
      started_at: record.started_at,
      completed_at: record.completed_at,
      urls: record.results.map((name) => `${base}/v1/jobs/${record.id}/results/${name}`),
      error: record.error,
      stats: record.stats,
      webhook: record.webhook ? { status: record.webhook.status, attempts: record.webhook.attempts, last_error: record.webhook.last_error } : null,
      request: record.request,
      notes: record.notes ?? [],
    };
  }

  private eta(record: JobRecord): number | null {
    if (record.status === 'succeeded') return 0;
    const run = this.running;
    if (record.status !== 'processing' || run?.id !== record.id) return null;
    const gained = record.progress - run.fromProgress;
    if (gained <= 0) return null;
    const seconds = (performance.now() - run.since) / 1000;
    return Math.round(((seconds / gained) * (1 - record.progress)) * 10) / 10;
  }

  private persist(record: JobRecord): Promise<void> {
    const next = this.saving.then(() => (this.removed.has(record.id) ? undefined : this.store.save(record)));
    this.saving = next.catch((error: unknown) => this.log.error('cannot save job', { job: record.id, error: String(error) }));
    return next;
  }

  private pump(): void {
    if (!this.started || this.draining || this.running) return;
    const id = this.queue.shift();
    if (id === undefined) return;
    const record = this.records.get(id)!;
    const controller = new AbortController();
    const since = performance.now();
    const done = this.run(record, controller.signal).finally(() => {
      this.running = undefined;
      this.pump();
    });
    this.running = { id, controller, done, since, fromProgress: record.progress };
  }

  private async run(record: JobRecord, signal: AbortSignal): Promise<void> {
    // 1. mark it running (persisted: a crash from here on resumes it)
    record.status = 'processing';
    record.started_at ??= new Date().toISOString();
    await this.persist(record);
    let lastSave = performance.now();
    const job: RunningJob = {
      record,
      dir: this.store.dir(record.id),
      signal,
      progress: (fraction, stats) => {
        record.progress = Math.max(0, Math.min(1, fraction));
        if (stats) record.stats = { ...record.stats, ...stats };
        if (performance.now() - lastSave < this.options.progressSaveMs) return;
        lastSave = performance.now();
        void this.persist(record).catch(() => undefined);
      },
      save: () => this.persist(record),
    };
    // 2. run it; an abort is a cancel or a drain, anything else a failure
    try {
      await this.executors[record.kind](job);
      record.progress = 1;
      await this.finish(record, 'succeeded');
    } catch (error) {
      if (signal.aborted && signal.reason === DRAIN) {
        record.status = 'starting';
        await this.persist(record);
        this.log.info('job interrupted by shutdown; it resumes at the next start', { job: record.id, progress: record.progress });
      } else if (signal.aborted) {
        await this.finish(record, 'canceled');
      } else {
        const e = toServiceError(error);
        if (e.status >= 500) this.log.error('job failed', { job: record.id, code: e.code, error: String((error as Error)?.stack ?? error) });
        await this.finish(record, 'failed', { code: e.code, message: e.message });
      }
    }
  }

  private async finish(record: JobRecord, status: JobStatus, error: JobRecord['error'] = null): Promise<void> {
    record.status = status;
    record.error = error;
    record.completed_at = new Date().toISOString();
    await this.persist(record);
    this.notify(record);
  }

  private notify(record: JobRecord): void {
    const hook = record.webhook;
    if (!hook) return;
    const delivery = deliverWebhook(hook.url, this.view(record), this.options.webhook).then(async (result) => {
      hook.status = result.ok ? 'delivered' : 'failed';
      hook.attempts += result.attempts;
      hook.last_error = result.error;
      if (!result.ok) this.log.warn('webhook not delivered', { job: record.id, error: result.error });
      await this.persist(record).catch(() => undefined);
    });
    this.deliveries.add(delivery);
    void delivery.finally(() => this.deliveries.delete(delivery));
  }

  /** Deletes finished jobs whose completion is older than the retention limit. */
  private async prune(records: readonly JobRecord[]): Promise<Set<string>> {
    const cutoff = Date.now() - this.options.retentionMs;
    const removed = new Set<string>();
    for (const r of records) {
      if (!FINISHED.includes(r.status) || Date.parse(r.completed_at ?? r.created_at) >= cutoff) continue;
      if (r.webhook?.status === 'pending') continue;
      await this.store.remove(r.id);
      this.records.delete(r.id);
      removed.add(r.id);
      this.log.info('deleted job past retention', { job: r.id, completed_at: r.completed_at });
    }
    return removed;
  }
}

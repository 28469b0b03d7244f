/**
 * The single-node job queue: accepted jobs run one at a time, in the order they were accepted, through the
 * executor of their kind (run.ts). Every change of state is persisted (JobStore) before it is reported, so a restart loses no
 * accepted job: start() resumes jobs that were queued or running. Cancel aborts a running job (its
 * ffmpeg is killed); drain() stops a running job without failing it, so the next start resumes it.
 */
import { ServiceError } from '../../../models/errors.ts';
import type { Logger } from '../../log.ts';
import { refuseWhileDraining } from '../../shutdown.ts';
import { deliverWebhook, DEFAULT_WEBHOOK_OPTIONS, type WebhookOptions } from '../webhook.ts';
import { CANCEL, DRAIN, finishJob, jobView, runJob, type Executor } from './run.ts';
import { BROKEN_JOBS_DIR, FINISHED, type JobRecord, type JobStore } from './store.ts';

/**
 * A job queue as the HTTP routes see it: the single-node JobManager below, or a cluster's BullMQ queue
 * (cluster-jobs.ts). Records are read through it, so any API node answers for any job.
 */
export interface Jobs {
  readonly store: JobStore;
  /** Takes and runs jobs from now on (and resumes what an earlier run left). */
  start(): Promise<void>;
  /** Throws rate_limited when the queue, or the client's share of it, is full (checked before an upload is read). */
  admit?(client: string | undefined): void;
  /** Persists a new job, then queues it; `client` is who asked (fairness between clients). */
  submit(record: JobRecord, client: string): Promise<JobRecord>;
  get(id: string): Promise<JobRecord>;
  /** Newest first. */
  list(): Promise<JobRecord[]>;
  /** Cancels a queued or running job; a finished one is a conflict. */
  cancel(id: string): Promise<JobRecord>;
  /** Deletes a finished job with its files; a queued or running one is a conflict. */
  remove(id: string): Promise<JobRecord>;
  /** No new jobs; a running job is interrupted and left to resume. */
  drain(): Promise<void>;
}

export interface JobManagerOptions {
  /** Finished jobs older than this are deleted at start (and hourly): 7 days. */
  readonly retentionMs: number;
  /** How long drain() waits for a running job to stop, ms. */
  readonly drainTimeoutMs: number;
  /** Progress is written to job.json at most this often, ms. */
  readonly progressSaveMs: number;
  readonly webhook: WebhookOptions;
  /** Jobs queued or running, in all and per client address; more are refused with 429 and Retry-After. */
  readonly maxQueued: number;
  readonly maxQueuedPerClient: number;
}

export const DEFAULT_JOB_OPTIONS: JobManagerOptions = Object.freeze({
  retentionMs: 7 * 24 * 3600 * 1000,
  drainTimeoutMs: 10_000,
  progressSaveMs: 1000,
  webhook: DEFAULT_WEBHOOK_OPTIONS,
  maxQueued: 64,
  maxQueuedPerClient: 16,
});

/** A client refused for a full queue should come back after about this long, s (a small job's time). */
const QUEUE_RETRY_S = 30;

/** How often finished jobs past retention are looked for while running. */
const PRUNE_INTERVAL_MS = 3600 * 1000;

interface Running {
  readonly id: string;
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

export class JobManager implements Jobs {
  private readonly records = new Map<string, JobRecord>();
  /** Jobs deleted by remove(): a late save (a webhook's outcome) must not bring their folder back. */
  private readonly removed = new Set<string>();
  private readonly queue: string[] = [];
  private running: Running | undefined;
  /** Clients of submits between their queue check and their record being listed. */
  private readonly reserving: (string | undefined)[] = [];
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
    const records = await this.store.scan((name, error, what) => {
      if (what === 'deleted') this.log.info('deleted a job folder without job.json (a request that died before its job was saved)', { job: name });
      else this.log.warn(what === 'moved' ? `moved a job folder with an unreadable job.json to ${BROKEN_JOBS_DIR}/` : 'skipping an unreadable job', { job: name, error: String(error) });
    }, performance.timeOrigin);
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

  /** Throws rate_limited (with Retry-After) when the queue, or this client's share of it, is full. */
  admit(client: string | undefined): void {
    let total = this.reserving.length;
    let mine = this.reserving.filter((c) => c !== undefined && c === client).length;
    for (const r of this.records.values()) {
      if (FINISHED.includes(r.status)) continue;
      total++;
      if (client !== undefined && r.client === client) mine++;
    }
    const { maxQueued, maxQueuedPerClient } = this.options;
    if (total >= maxQueued) throw new ServiceError('rate_limited', `the job queue is full (${maxQueued} jobs queued or running); try again later`, { retryAfter: QUEUE_RETRY_S });
    if (mine >= maxQueuedPerClient) {
      throw new ServiceError('rate_limited', `this client already has ${maxQueuedPerClient} jobs queued or running; wait for one to finish or cancel one`, { retryAfter: QUEUE_RETRY_S });
    }
  }

  /**
   * Persists a new job, then queues it (first come, first served on one node; the queue limits are checked
   * again: admit() and submit() may be apart).
   */
  async submit(record: JobRecord, _client?: string): Promise<JobRecord> {
    refuseWhileDraining(this.draining, 'the server is shutting down: no new jobs');
    this.admit(record.client);
    this.reserving.push(record.client); // between this check and the record being listed: concurrent submits count it
    try {
      await this.persist(record);
    } finally {
      this.reserving.splice(this.reserving.indexOf(record.client), 1);
    }
    this.records.set(record.id, record);
    this.queue.push(record.id);
    this.pump();
    return record;
  }

  async get(id: string): Promise<JobRecord> {
    return this.record(id);
  }

  private record(id: string): JobRecord {
    const record = this.records.get(id);
    if (!record) throw new ServiceError('not_found', `no job ${id}`, { field: 'id' });
    return record;
  }

  /** Every job, newest first (ties by id, so that pages are stable). */
  async list(): Promise<JobRecord[]> {
    return [...this.records.values()].sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id));
  }

  /** Cancels a queued or running job; a finished one is a conflict (remove() deletes it). */
  async cancel(id: string): Promise<JobRecord> {
    const record = this.record(id);
    if (FINISHED.includes(record.status)) throw new ServiceError('conflict', `job ${id} already ${record.status}`, { field: 'id' });
    if (this.running?.id === id) {
      this.running.controller.abort(CANCEL);
      await this.running.done;
      return record;
    }
    this.queue.splice(this.queue.indexOf(id), 1);
    await finishJob(record, 'canceled', null, (r) => this.persist(r));
    this.notify(record);
    return record;
  }

  /** Deletes a finished job: its record and its folder (inputs and results). A queued or running one is a conflict. */
  async remove(id: string): Promise<JobRecord> {
    const record = this.record(id);
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
    const done = runJob(record, {
      executor: this.executors[record.kind],
      files: this.store.files(id),
      signal: controller.signal,
      persist: (r) => this.persist(r),
      progressSaveMs: this.options.progressSaveMs,
      log: this.log,
    })
      .then((outcome) => {
        if (outcome === 'finished') this.notify(record);
      })
      .finally(() => {
        this.running = undefined;
        this.pump();
      });
    this.running = { id, controller, done };
  }

  private notify(record: JobRecord): void {
    const hook = record.webhook;
    if (!hook) return;
    const delivery = deliverWebhook(hook.url, jobView(record), this.options.webhook).then(async (result) => {
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

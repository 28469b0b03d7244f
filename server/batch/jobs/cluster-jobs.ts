/**
 * The job queue of a cluster, on BullMQ: any API node accepts, lists, shows and cancels jobs (records in
 * Redis, redis-store.ts); workers take them by capability - from the queue of their model pack, and from its
 * queue for their execution provider (jobs that ask for one) - and run them as a single node does (run.ts); a
 * worker takes no job while its machine is short of free memory. A worker that dies mid-job stops renewing its lock: BullMQ hands the job
 * to another worker, which resumes it from the files already stored (image jobs per image).
 *
 * Fairness: a job's BullMQ priority is the number of unfinished jobs its client has, so a client with 100 jobs
 * queued does not hold back another's first one (equal priorities run first come, first served). Interactive
 * renders (A1111, OpenAI) have a queue of their own (cluster-renders.ts), ahead of every batch.
 */
import { freemem } from 'node:os';
import { Queue, WaitingError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { ServiceError } from '../../../models/errors.ts';
import type { Provider } from '../../../models/runtime/onnx.ts';
import { KEYS } from '../../cluster/redis.ts';
import type { Logger } from '../../log.ts';
import { deliverWebhook } from '../webhook.ts';
import { queueName, workerOptions, type BullSettings, type CancelChannel } from './bull.ts';
import type { JobManagerOptions, Jobs } from './manager.ts';
import type { RedisJobStore } from './redis-store.ts';
import { CANCEL, DRAIN, finishJob, jobView, runJob, type Executor } from './run.ts';
import type { ImagesJobRequest, VideoJobRequest } from './schema.ts';
import { FINISHED, type JobRecord } from './store.ts';

/** BullMQ's lowest priority (priorities are 1 .. 2^21). */
const MAX_PRIORITY = 2 ** 21;
/** How often a worker checks free memory against --min-free-mb, ms. */
const MEMORY_CHECK_MS = 1000;
/** How often cancel() looks whether the worker running a job has stopped it, ms. */
const CANCEL_POLL_MS = 50;

interface JobData {
  readonly id: string;
  /** Who submitted it (fairness). */
  readonly client: string;
}

export interface ClusterJobsOptions extends BullSettings {
  readonly redis: Redis;
  readonly store: RedisJobStore;
  readonly cancels: CancelChannel;
  /** The pack this node's engine serves: its queue. */
  readonly pack: string;
  /** The execution provider this node runs: the queue of jobs that ask for it. */
  readonly provider: Provider;
  /** Executors when this node is a worker; undefined on an API-only node. */
  readonly executors: Record<JobRecord['kind'], Executor> | undefined;
  /** A worker takes no jobs while free memory is below this, MiB. */
  readonly minFreeMemoryMb: number;
  readonly jobs: JobManagerOptions;
  readonly log: Logger;
}

/** The queue of a job: its pack's, or its pack's for the provider it asks for. */
function jobQueueName(pack: string, provider: Provider | undefined): string {
  return queueName('jobs', provider === undefined ? pack : `${pack}.${provider}`);
}

export class ClusterJobs implements Jobs {
  readonly store: RedisJobStore;
  private readonly queues = new Map<string, Queue<JobData>>();
  private readonly webhooks: Queue<{ id: string }>;
  /** A worker for the pack's queue and one for its provider's (a node may run one job from each at once). */
  private workers: Worker<JobData>[] = [];
  private webhookWorker: Worker<{ id: string }> | undefined;
  private memoryTimer: NodeJS.Timeout | undefined;
  private stopListening: (() => void) | undefined;
  private draining = false;
  /** Jobs this node is running. */
  active = 0;
  /** True while free memory keeps this worker from taking jobs. */
  paused = false;
  private running = false;

  constructor(private readonly options: ClusterJobsOptions) {
    this.store = options.store;
    this.webhooks = new Queue(queueName('webhooks'), { connection: options.connection });
  }

  private queue(provider: Provider | undefined): Queue<JobData> {
    const name = jobQueueName(this.options.pack, provider);
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: this.options.connection });
      this.queues.set(name, queue);
    }
    return queue;
  }

  async start(): Promise<void> {
    const { options } = this;
    // every node delivers webhooks (they wait in their own queue, so a delivery outlives the node that queued it)
    this.webhookWorker = new Worker(queueName('webhooks'), (job) => this.deliver(job.data.id), workerOptions(options, 4));
    if (!options.executors) return;
    this.queue(undefined);
    this.queue(options.provider);
    for (const provider of [undefined, options.provider]) {
      // started by checkMemory: a worker short of memory must not take a job even once
      const worker = new Worker<JobData>(jobQueueName(options.pack, provider), (job, token, signal) => this.process(job, token, signal), { ...workerOptions(options, 1), autorun: false });
      // a job failed by BullMQ itself (it stalled too often): its record must say so
      worker.on('failed', (job, error) => void (job && this.failedInQueue(job.data, error)));
      this.workers.push(worker);
    }
    this.stopListening = options.cancels.listen((id) => this.workers.forEach((w) => w.cancelJob(id, CANCEL)));
    this.memoryTimer = setInterval(() => void this.checkMemory(), MEMORY_CHECK_MS);
    this.memoryTimer.unref();
    await this.checkMemory();
  }

  async submit(record: JobRecord, client: string): Promise<JobRecord> {
    if (this.draining) throw new ServiceError('unavailable', 'the server is shutting down: no new jobs');
    await this.store.save(record);
    const load = await this.options.redis.hincrby(KEYS.clientLoad, client, 1);
    try {
      await this.queue(providerOf(record)).add(record.kind, { id: record.id, client }, { jobId: record.id, priority: Math.min(Math.max(load, 1), MAX_PRIORITY), removeOnComplete: true, removeOnFail: true });
    } catch (error) {
      await this.options.redis.hincrby(KEYS.clientLoad, client, -1);
      throw error;
    }
    return record;
  }

  async get(id: string): Promise<JobRecord> {
    const record = await this.store.load(id);
    if (!record) throw new ServiceError('not_found', `no job ${id}`, { field: 'id' });
    return record;
  }

  async list(): Promise<JobRecord[]> {
    const records = await this.store.scan((id, error) => this.options.log.warn('skipping unreadable job record', { job: id, error: String(error) }));
    return records.sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id)); // ties by id: stable pages
  }

  /** A waiting job is taken out of the queue here; a running one is stopped by its worker, wherever it is. */
  async cancel(id: string): Promise<JobRecord> {
    const record = await this.get(id);
    if (FINISHED.includes(record.status)) throw new ServiceError('conflict', `job ${id} already ${record.status}`, { field: 'id' });
    const job = await this.queue(providerOf(record)).getJob(id);
    // remove() refuses a job a worker holds the lock of
    if (job && (await job.remove().then(() => true, () => false))) {
      await finishJob(record, 'canceled', null, (r) => this.store.save(r));
      await this.finished(record, job.data.client);
      return record;
    }
    await this.options.cancels.cancel(id);
    const deadline = Date.now() + this.options.jobs.drainTimeoutMs;
    for (;;) {
      const now = await this.get(id);
      if (FINISHED.includes(now.status) || Date.now() > deadline) return now;
      await new Promise((r) => setTimeout(r, CANCEL_POLL_MS));
    }
  }

  /** Deletes a finished job: its record, inputs and results in Redis. */
  async remove(id: string): Promise<JobRecord> {
    const record = await this.get(id);
    if (!FINISHED.includes(record.status)) throw new ServiceError('conflict', `job ${id} is ${record.status}: cancel it first`, { field: 'id' });
    await this.store.remove(id);
    return record;
  }

  /** Stops taking jobs; the running one is interrupted and goes back to the queue for another worker. */
  async drain(): Promise<void> {
    this.draining = true;
    clearInterval(this.memoryTimer);
    this.stopListening?.();
    const timeout = () => new Promise((r) => setTimeout(r, this.options.jobs.drainTimeoutMs).unref());
    for (const worker of this.workers) worker.cancelAllJobs(DRAIN);
    await Promise.race([Promise.all(this.workers.map((w) => w.close())), timeout()]);
    await Promise.race([this.webhookWorker?.close(), timeout()]);
    await Promise.all([...[...this.queues.values()].map((q) => q.close()), this.webhooks.close()]);
  }

  /** Waiting and running jobs of the queues this node knows, by queue (GET /v1/cluster, metrics). */
  async counts(): Promise<Record<string, Record<string, number>>> {
    this.queue(undefined);
    const entries = await Promise.all([...this.queues].map(async ([name, q]) => [name, await q.getJobCounts('waiting', 'prioritized', 'active', 'delayed')] as const));
    return Object.fromEntries(entries);
  }

  private async process(job: Job<JobData>, token: string | undefined, signal: AbortSignal | undefined): Promise<void> {
    const record = await this.store.load(job.data.id);
    if (!record || FINISHED.includes(record.status)) return; // deleted, or cancelled while it waited
    this.active++;
    try {
      // 'processing': its worker died; progress with 'starting': a draining worker handed it back
      if (record.status === 'processing' || record.progress > 0) this.options.log.info('resuming job', { job: record.id, kind: record.kind, progress: record.progress, attempt: job.attemptsStarted });
      const outcome = await runJob(record, {
        executor: this.options.executors![record.kind],
        files: this.store.files(record.id),
        signal: signal ?? new AbortController().signal,
        persist: (r) => this.store.save(r),
        progressSaveMs: this.options.jobs.progressSaveMs,
        log: this.options.log,
      });
      if (outcome === 'interrupted') {
        // back to the queue, keeping its place and priority: another worker resumes it
        await job.moveToWait(token);
        throw new WaitingError();
      }
      await this.finished(record, job.data.client);
    } finally {
      this.active--;
    }
  }

  /** A job is over: its client's count goes down and its webhook is queued. */
  private async finished(record: JobRecord, client: string): Promise<void> {
    await this.options.redis.hincrby(KEYS.clientLoad, client, -1);
    if (record.webhook?.status === 'pending') await this.webhooks.add('deliver', { id: record.id }, { jobId: `webhook-${record.id}`, removeOnComplete: true, removeOnFail: true });
  }

  private async failedInQueue(data: JobData, error: Error): Promise<void> {
    const record = await this.store.load(data.id).catch(() => undefined);
    if (!record || FINISHED.includes(record.status)) return;
    this.options.log.error('job failed in the queue', { job: record.id, error: error.message });
    await finishJob(record, 'failed', { code: 'unavailable', message: `the job could not be completed: ${error.message}` }, (r) => this.store.save(r));
    await this.finished(record, data.client);
  }

  private async deliver(id: string): Promise<void> {
    const record = await this.store.load(id);
    const hook = record?.webhook;
    if (!record || hook?.status !== 'pending') return;
    const result = await deliverWebhook(hook.url, jobView(record), this.options.jobs.webhook);
    hook.status = result.ok ? 'delivered' : 'failed';
    hook.attempts += result.attempts;
    hook.last_error = result.error;
    if (!result.ok) this.options.log.warn('webhook not delivered', { job: id, error: result.error });
    await this.store.save(record);
  }

  /** Pauses taking jobs while the machine is short of memory (a job already running goes on). */
  private async checkMemory(): Promise<void> {
    if (this.workers.length === 0 || this.draining) return;
    const short = freemem() / 2 ** 20 < this.options.minFreeMemoryMb;
    if (short && !this.paused) {
      this.paused = true;
      this.options.log.warn('free memory under --min-free-mb: taking no jobs', { free_mb: Math.round(freemem() / 2 ** 20) });
      if (this.running) await Promise.all(this.workers.map((w) => w.pause(true)));
    } else if (!short && (this.paused || !this.running)) {
      this.paused = false;
      if (this.running) for (const w of this.workers) w.resume();
      else for (const w of this.workers) void w.run().catch((error: unknown) => this.options.log.error('job worker stopped', { error: String(error) }));
      this.running = true;
    }
  }
}

/** The provider a job asks for, if any. */
function providerOf(record: JobRecord): Provider | undefined {
  return (record.request as ImagesJobRequest | VideoJobRequest).provider;
}

/**
 * What the cluster's BullMQ queues share: queue names by capability, worker settings, errors carried across
 * the queue, and cancels that reach whichever worker runs a job.
 */
import type { Redis } from 'ioredis';
import type { WorkerOptions } from 'bullmq';
import { ERROR_CODES, ServiceError, toServiceError, type ErrorCode } from '../../../models/errors.ts';
import { KEYS } from '../../cluster/redis.ts';
import type { Logger } from '../../log.ts';

/** Which queue a job waits in: its kind of work and the model pack it needs (workers take their pack's). */
export function queueName(kind: 'jobs' | 'renders' | 'webhooks', pack?: string): string {
  // BullMQ keys are `bull:<name>:...`: no colons in a name
  return pack === undefined ? kind : `${kind}-${pack.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
}

/** How many times a job may be found abandoned (its worker died) and run again before it fails. */
export const MAX_STALLS = 3;

export interface BullSettings {
  /** A connection for BullMQ (blocking: it waits for Redis instead of failing). */
  readonly connection: Redis;
  /** This node's id: BullMQ records it on the jobs it takes. */
  readonly nodeId: string;
  /** The job lock, ms: a worker silent this long is taken for dead and its job runs elsewhere. */
  readonly lockMs: number;
}

export function workerOptions(settings: BullSettings, concurrency: number): WorkerOptions {
  return {
    connection: settings.connection,
    name: settings.nodeId,
    concurrency,
    lockDuration: settings.lockMs,
    stalledInterval: Math.min(settings.lockMs, 30_000),
    maxStalledCount: MAX_STALLS,
  };
}

/** A ServiceError as a failed job's reason (BullMQ keeps a message string). */
export function errorReason(error: unknown): Error {
  const e = toServiceError(error);
  return new Error(JSON.stringify({ code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) }));
}

/** A failed job's reason back as the ServiceError it was. */
export function reasonError(reason: string): ServiceError {
  try {
    const { code, message, field } = JSON.parse(reason) as { code: string; message: string; field?: string };
    if (code in ERROR_CODES) return new ServiceError(code as ErrorCode, message, field ? { field } : {});
  } catch {
    // not one of ours: BullMQ's own (a job stalled too often)
  }
  return new ServiceError('unavailable', `the job could not run: ${reason}`);
}

/** Cancels by pub/sub: the node running a job hears its id, whichever node asked. */
export class CancelChannel {
  private readonly handlers = new Set<(id: string) => void>();

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    log: Logger,
  ) {
    subscriber.on('message', (_channel: string, id: string) => {
      for (const handler of this.handlers) handler(id);
    });
    subscriber.subscribe(KEYS.cancel).catch((error: unknown) => log.error('cannot subscribe to cancels', { error: String(error) }));
  }

  /** Calls `handler` with each id cancelled anywhere; returns the unsubscribe. */
  listen(handler: (id: string) => void): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  async cancel(id: string): Promise<void> {
    await this.publisher.publish(KEYS.cancel, id);
  }
}

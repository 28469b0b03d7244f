/**
 * Shutdown of the HTTP side without cutting anyone off: the listener stops accepting, idle keep-alive
 * connections close, requests in flight get a grace period to finish; those still running then are aborted
 * through `signal` (a render stops at its next UNet batch and is answered 503 with Retry-After), and only then
 * are the remaining connections closed. Long-lived responses (MJPEG viewers, marked res.locals.longLived) are
 * not waited for: they end when their stream closes.
 */
import type { Server } from 'node:http';
import type { RequestHandler, Response } from 'express';
import { ServiceError } from '../models/errors.ts';

/** How long aborted requests get to send their 503 before their connections are closed, ms. */
const ABORT_FLUSH_MS = 2000;
/** Retry-After on answers given while the server shuts down: a restart takes about this long, s. */
export const RESTART_RETRY_S = 10;

/** Throws unavailable (503, Retry-After) while the server drains. */
export function refuseWhileDraining(draining: boolean, what = 'the server is shutting down'): void {
  if (draining) throw new ServiceError('unavailable', what, { retryAfter: RESTART_RETRY_S });
}

export class InFlightRequests {
  private readonly open = new Set<Response>();
  private readonly waiters = new Set<() => void>();
  private readonly controller = new AbortController();

  /** Aborted when the grace period is over: requests still running must stop (renders watch it). */
  readonly signal = this.controller.signal;

  /** Express middleware: tracks the request until its response closes. */
  readonly track: RequestHandler = (_req, res, next) => {
    this.open.add(res);
    res.once('close', () => {
      this.open.delete(res);
      this.wake();
    });
    next();
  };

  /** Requests still running that shutdown waits for (a route marks a response that lasts as long as a stream: res.locals.longLived). */
  get pending(): number {
    let n = 0;
    for (const res of this.open) if (res.locals['longLived'] !== true) n++;
    return n;
  }

  /** Stops the listener, waits up to graceMs for requests in flight, aborts the rest, closes every connection. */
  async drain(http: Server, graceMs: number): Promise<{ finished: boolean }> {
    const closed = new Promise<void>((ok) => http.close(() => ok()));
    http.closeIdleConnections();
    const finished = await this.settled(graceMs);
    if (!finished) {
      this.controller.abort(new ServiceError('unavailable', 'the server is shutting down: the request was stopped', { retryAfter: RESTART_RETRY_S }));
      await this.settled(ABORT_FLUSH_MS);
    }
    http.closeAllConnections();
    await closed;
    return { finished };
  }

  private settled(timeoutMs: number): Promise<boolean> {
    if (this.pending === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(value);
      };
      const check = () => this.pending === 0 && done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(check);
    });
  }

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }
}

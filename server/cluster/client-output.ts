/**
 * A relayed stream's outputs to its client, sent as a local session sends them (server/PROTOCOL.md, flow
 * control): only against the client's credit and while its socket drains; otherwise the newest output waits
 * and an older waiting one is dropped and counted.
 */
import type { WebSocket } from 'ws';
import type { Metrics } from '../metrics.ts';
import type { StreamStats } from '../streams/session.ts';

/** Bytes the client's socket may hold unsent before outputs wait (as for a local session). */
const MAX_SOCKET_BUFFER = 2 * 1024 * 1024;

export interface OutputFrame {
  readonly meta: object;
  readonly bytes: Buffer;
}

export class ClientOutput {
  private credits: number;
  private held: OutputFrame | undefined;

  constructor(
    private readonly ws: WebSocket,
    /** Outputs the client takes before it acks (its `window`). */
    private readonly window: number,
    private readonly stats: StreamStats,
    private readonly metrics: Metrics,
  ) {
    this.credits = window;
  }

  /** An `ack`: `frames` more outputs may go, and one that waited goes now. */
  ack(frames: number): void {
    this.credits = Math.min(this.credits + frames, this.window);
    const frame = this.held;
    this.held = undefined;
    if (frame) this.send(frame);
  }

  send(frame: OutputFrame): void {
    if (this.credits > 0 && this.ws.bufferedAmount < MAX_SOCKET_BUFFER && this.ws.readyState === this.ws.OPEN) {
      this.credits--;
      this.stats.framesOut++;
      this.metrics.frameSent();
      this.ws.send(JSON.stringify(frame.meta));
      this.ws.send(frame.bytes, { binary: true });
      return;
    }
    if (this.held) {
      this.stats.droppedOutput++;
      this.metrics.framesDropped.inc({ reason: 'no_credit' });
    }
    this.held = frame;
  }
}

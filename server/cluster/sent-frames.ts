/**
 * The client frames a gateway sent to a stream's current worker, in order. The worker numbers its inputs 1, 2,
 * ... as they arrive; its outputs say which input they show. This maps those numbers back to the client's
 * frame ids and tells which frames were never shown: dropped by the worker (a newer frame replaced them) or, when
 * the worker dies, lost in its buffer. Only frames not yet shown (and the last one shown) are kept.
 */
export class SentFrames {
  /** Client ids from the last shown on, in the order sent. */
  private ids: number[] = [];
  /** The worker's input number of ids[0]. */
  private first = 1;
  /** The client id of the last frame an output showed (0: none yet). */
  private shown = 0;

  push(clientId: number): void {
    this.ids.push(clientId);
  }

  /** The client frame of the worker's input `n`; null when it is not known (any more). */
  clientId(n: number): number | null {
    return this.ids[n - this.first] ?? null;
  }

  /** An output showed client frame `source`: returns how many frames sent before it were never shown. */
  show(source: number): number {
    let dropped = 0;
    while (this.ids.length > 0 && this.ids[0]! < source) {
      if (this.ids[0]! !== this.shown) dropped++;
      this.ids.shift();
      this.first++;
    }
    this.shown = Math.max(this.shown, source);
    return dropped;
  }

  /** Frames sent and not shown yet: in the worker's buffer (or waiting there). */
  inFlight(): number[] {
    return this.ids.filter((id) => id > this.shown);
  }
}

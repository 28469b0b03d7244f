/**
 * How urgent a model call is, and the one rule that orders calls by it (used by the dispatcher's queue and by the
 * server's UNet batcher in front of it, so the two agree).
 *
 * Classes: `live` (a stream's frame, with a deadline from the stream's target), `interactive` (a synchronous
 * render someone waits for: A1111, OpenAI), `background` (a job). The most urgent call goes first: live before
 * interactive before background, earliest deadline first within a class (a call without a deadline counts from
 * when it was submitted, i.e. first come first served). The lower classes are owed a minimum share of worker
 * time (ClassShares) so live load never starves them entirely.
 *
 * A call's urgency travels with the async context of the work that makes it (AsyncLocalStorage): a flow enters
 * its plan's class once (withUrgency) and every model call made under it, however deep, carries it, without an
 * extra parameter on every model wrapper. A call made outside any flow is interactive.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export const CALL_CLASSES = ['live', 'interactive', 'background'] as const;
export type CallClass = (typeof CALL_CLASSES)[number];

export interface Urgency {
  readonly class: CallClass;
  /** performance.now() (ms) by which the call's result is wanted; live frames have one. */
  readonly deadline?: number | undefined;
  /** A live stream's frame interval (ms): how long a background call may hold a worker is a fraction of it. */
  readonly interval?: number | undefined;
}

export const INTERACTIVE: Urgency = Object.freeze({ class: 'interactive' });

const RANK: Record<CallClass, number> = { live: 0, interactive: 1, background: 2 };

/** 0 for live, 1 interactive, 2 background: lower goes first. */
export function classRank(cls: CallClass): number {
  return RANK[cls];
}

const storage = new AsyncLocalStorage<Urgency>();

/** Runs `fn` with every model call it makes (now or later in its async work) carrying `urgency`. */
export function withUrgency<T>(urgency: Urgency, fn: () => T): T {
  return storage.run(urgency, fn);
}

/** The urgency of a call made now (interactive outside any flow). */
export function currentUrgency(): Urgency {
  return storage.getStore() ?? INTERACTIVE;
}

/** Something waiting with an urgency: the time it was submitted (ms) and its place in arrival order. */
export interface Waiting {
  readonly urgency: Urgency;
  readonly submittedAt: number;
}

/** < 0 when `a` goes before `b`: class rank, then deadline (submission time without one); ties keep arrival order. */
export function compareUrgency(a: Waiting, b: Waiting): number {
  const rank = RANK[a.urgency.class] - RANK[b.urgency.class];
  if (rank !== 0) return rank;
  return (a.urgency.deadline ?? a.submittedAt) - (b.urgency.deadline ?? b.submittedAt);
}

/** The more urgent of two urgencies (a batch of rows from several requests runs as its most urgent member). */
export function mostUrgent(a: Waiting, b: Waiting): Waiting {
  return compareUrgency(b, a) < 0 ? b : a;
}

/**
 * Default minimum share of worker time owed to each class below live (interactive, background), over the last
 * SHARE_WINDOW_MS: when a class that has work waiting got less, its most urgent call goes first.
 */
export const DEFAULT_MIN_SHARE = 0.05;
/** The window shares are measured over (ms). */
export const SHARE_WINDOW_MS = 2000;

interface Span {
  readonly class: CallClass;
  readonly start: number;
  end: number | undefined;
}

/**
 * Worker time per class over a sliding window, counting calls still running up to now (a call that has just
 * started already counts, so two calls in a row are not both let through on the same debt).
 */
export class ClassShares {
  private spans: Span[] = [];

  constructor(
    /** Minimum share owed to each class below live (0 turns the guarantee off). */
    readonly minShare: number = DEFAULT_MIN_SHARE,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(minShare >= 0 && minShare < 1)) throw new RangeError(`a minimum share must be in [0, 1), got ${minShare}`);
  }

  /** A call of `cls` starts now; call the returned function when it ends. */
  start(cls: CallClass): () => void {
    const span: Span = { class: cls, start: this.now(), end: undefined };
    this.spans.push(span);
    return () => {
      span.end ??= this.now();
    };
  }

  /** Share of the worker time of the window that went to `cls`, or undefined when nothing ran. */
  share(cls: CallClass): number | undefined {
    const now = this.now();
    const from = now - SHARE_WINDOW_MS;
    this.spans = this.spans.filter((s) => s.end === undefined || s.end > from);
    let total = 0;
    let mine = 0;
    for (const s of this.spans) {
      const ms = (s.end ?? now) - Math.max(s.start, from);
      total += ms;
      if (s.class === cls) mine += ms;
    }
    return total > 0 ? mine / total : undefined;
  }

  /** The class below live that is owed its share and has work waiting (interactive first), if any. */
  owed(waiting: ReadonlySet<CallClass>): CallClass | undefined {
    if (this.minShare === 0) return undefined;
    for (const cls of ['interactive', 'background'] as const) {
      if (!waiting.has(cls)) continue;
      const share = this.share(cls);
      if (share !== undefined && share < this.minShare) return cls;
    }
    return undefined;
  }
}

/**
 * Index of the item to run next among `items`: the most urgent of a class owed its share, else the most urgent
 * (compareUrgency; the earlier item on a tie). Undefined for an empty list.
 */
export function pickNext(items: readonly Waiting[], shares: ClassShares): number | undefined {
  if (items.length === 0) return undefined;
  const owed = shares.owed(new Set(items.map((i) => i.urgency.class)));
  let best: number | undefined;
  items.forEach((item, i) => {
    if (owed !== undefined && item.urgency.class !== owed) return;
    if (best === undefined || compareUrgency(item, items[best]!) < 0) best = i;
  });
  return best;
}

/**
 * While streams are live, a call below live may hold a worker at most this fraction of the tightest live frame
 * interval: longer background UNet work is cut (server/batcher.ts), and a longer call that cannot be cut (a full-VAE
 * decode) runs only on its class's minimum share (models/runtime/dispatcher.ts).
 */
export const CHUNK_FRACTION = 0.5;

/** The frame interval assumed for live calls that state none (ms): 30 fps. */
export const DEFAULT_LIVE_INTERVAL_MS = 1000 / 30;

/** How long after the last live call live streams count as active (ms). */
export const LIVE_ACTIVE_MS = 1000;

/** Remembers the live streams' frame intervals seen lately: whether live work is on, and the tightest interval. */
export class LiveActivity {
  private seen: { at: number; interval: number | undefined }[] = [];

  constructor(private readonly now: () => number = () => performance.now()) {}

  note(urgency: Urgency): void {
    if (urgency.class !== 'live') return;
    this.seen.push({ at: this.now(), interval: urgency.interval });
    if (this.seen.length > 256) this.seen = this.seen.slice(-128);
  }

  /** True when a live call was made within LIVE_ACTIVE_MS. */
  get active(): boolean {
    this.prune();
    return this.seen.length > 0;
  }

  /** The shortest frame interval of the live calls made lately (ms); DEFAULT_LIVE_INTERVAL_MS when none stated one. */
  get tightestInterval(): number {
    this.prune();
    let min: number | undefined;
    for (const s of this.seen) if (s.interval !== undefined && (min === undefined || s.interval < min)) min = s.interval;
    return min ?? DEFAULT_LIVE_INTERVAL_MS;
  }

  private prune(): void {
    const from = this.now() - LIVE_ACTIVE_MS;
    if (this.seen.length > 0 && this.seen[0]!.at < from) this.seen = this.seen.filter((s) => s.at >= from);
  }
}

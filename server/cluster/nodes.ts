/**
 * The node registry: every cluster node writes its description to Redis on a heartbeat, with an expiry a few
 * beats long. A node that stops beating (killed, frozen, cut off) disappears from the registry within
 * NODE_TTL_MS; gateways read the registry to place streams and to notice that a worker died.
 */
import type { Redis } from 'ioredis';
import type { NodeRole } from '../config.ts';
import type { Logger } from '../log.ts';
import { KEYS, liveEntries } from './redis.ts';

/** How often a node renews its entry, ms. */
export const HEARTBEAT_MS = 300;
/**
 * An entry not renewed for this long is gone: the node is taken for dead. Five beats: a busy event loop may
 * miss a few; short enough that a stream moves within 2 s of its worker's machine going silent, ms.
 */
export const NODE_TTL_MS = 1500;

/** What a node says about itself (GET /v1/cluster shows these). */
export interface NodeInfo {
  readonly id: string;
  readonly role: NodeRole;
  /** Where other nodes reach it (advertised address). */
  readonly url: string;
  /** The model pack it serves, and the runtime's execution provider. */
  readonly pack: string;
  readonly provider: string;
  readonly started_at: string;
  /** Shutting down: no new streams or jobs go to it. */
  readonly draining: boolean;
  /** Streams running on it, and how many it takes. */
  readonly streams: number;
  readonly max_streams: number;
  /** Output frames per second over its streams (last 5 s). */
  readonly fps: number;
  /** Adapter combinations (models/adapters/choices.ts keys) its streams run or ran lately: merged there already. */
  readonly adapters: readonly string[];
  /** Jobs and renders it is running. */
  readonly jobs_active: number;
  /** Takes no jobs now (free memory under --min-free-mb). */
  readonly jobs_paused: boolean;
  readonly memory: { readonly rss_mb: number; readonly free_mb: number };
  readonly heartbeat_at: string;
}

export type NodeDescription = Omit<NodeInfo, 'heartbeat_at'>;

/** True for nodes that run streams and jobs. */
export function isWorker(node: Pick<NodeInfo, 'role'>): boolean {
  return node.role !== 'api';
}

export class NodeRegistry {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> = Promise.resolve();
  private describe: (() => NodeDescription) | undefined;

  constructor(
    private readonly redis: Redis,
    readonly id: string,
    private readonly log: Logger,
  ) {}

  /** Registers this node now, then renews its entry every HEARTBEAT_MS. */
  async start(describe: () => NodeDescription): Promise<void> {
    this.describe = describe;
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** Writes the description now (also right after a change others must see at once, like draining). */
  beat(): Promise<void> {
    const describe = this.describe;
    if (!describe) return this.beating;
    this.beating = this.beating.then(async () => {
      const info: NodeInfo = { ...describe(), heartbeat_at: new Date().toISOString() };
      await this.redis
        .multi()
        .set(KEYS.node(this.id), JSON.stringify(info), 'PX', NODE_TTL_MS)
        .sadd(KEYS.nodes, this.id)
        .exec()
        .catch((error: unknown) => this.log.warn('heartbeat failed', { error: String(error) }));
    });
    return this.beating;
  }

  /** The live nodes (entries not expired). */
  list(): Promise<NodeInfo[]> {
    return liveEntries<NodeInfo>(this.redis, KEYS.nodes, KEYS.node);
  }

  /** Which of these nodes are alive now. */
  async alive(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const values = await this.redis.mget(ids.map((id) => KEYS.node(id)));
    return new Set(ids.filter((_, i) => values[i] !== null));
  }

  /** Leaves the registry (a clean shutdown; a crash just stops renewing). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.beating;
    await this.redis
      .multi()
      .del(KEYS.node(this.id))
      .srem(KEYS.nodes, this.id)
      .exec()
      .catch(() => undefined);
  }
}

/** The open streams, with the limits on how many there may be in all and per client address, and their names. */
import { ServiceError } from '../../models/errors.ts';
import { StreamNames } from './names.ts';
import type { StreamSession } from './session.ts';

export class StreamRegistry {
  private readonly sessions = new Map<string, { session: StreamSession; client: string }>();
  private readonly reserved = new Map<string, number>();
  /** Names asked for by streams still opening. */
  private readonly reservedNames = new Set<string>();
  /** Stable outputs by stream name. */
  readonly names: StreamNames;

  constructor(
    private readonly maxStreams: number,
    private readonly maxPerClient: number,
    /** The size of a name's placeholder before any stream of that name ran (the model's default). */
    placeholderSize: { width: number; height: number },
  ) {
    this.names = new StreamNames(placeholderSize);
  }

  /**
   * Holds a place (and the name, if any) for a stream being opened; throws rate_limited when no place is
   * free and conflict when a running or opening stream has the name. Returns the release.
   */
  reserve(client: string, name?: string): () => void {
    const total = this.sessions.size + [...this.reserved.values()].reduce((a, b) => a + b, 0);
    if (total >= this.maxStreams) throw new ServiceError('rate_limited', `the server already runs ${this.maxStreams} streams; try again later`);
    if (this.countFor(client) >= this.maxPerClient) throw new ServiceError('rate_limited', `at most ${this.maxPerClient} streams per client`);
    if (name !== undefined && (this.reservedNames.has(name) || this.names.running(name))) {
      throw new ServiceError('conflict', `a stream named "${name}" is already running; stop it first or choose another name`, { field: 'name' });
    }
    this.reserved.set(client, (this.reserved.get(client) ?? 0) + 1);
    if (name !== undefined) this.reservedNames.add(name);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.reserved.get(client) ?? 1) - 1;
      if (n <= 0) this.reserved.delete(client);
      else this.reserved.set(client, n);
      if (name !== undefined) this.reservedNames.delete(name);
    };
  }

  add(session: StreamSession, client: string): void {
    this.sessions.set(session.id, { session, client });
    this.names.attach(session);
    session.once('close', () => this.sessions.delete(session.id));
  }

  get(id: string): StreamSession {
    const entry = this.sessions.get(id);
    if (!entry) throw new ServiceError('not_found', `no stream ${id}`);
    return entry.session;
  }

  get size(): number {
    return this.sessions.size;
  }

  all(): StreamSession[] {
    return [...this.sessions.values()].map((e) => e.session);
  }

  private countFor(client: string): number {
    let n = this.reserved.get(client) ?? 0;
    for (const e of this.sessions.values()) if (e.client === client) n++;
    return n;
  }
}

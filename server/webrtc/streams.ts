/**
 * Streams whose frames travel as WebRTC media. Each is an ordinary StreamSession (same pipeline, limits,
 * registry, MJPEG and WHEP outputs) whose sink is the control channels (control.ts); its input comes from
 * one WHIP publisher at a time. A stream made by `POST /v1/streams` waits for its publisher up to
 * PUBLISH_TIMEOUT_MS; a stream ends when its publisher leaves (DELETE, `stop`, or the peer going away).
 */
import { ServiceError } from '../../models/errors.ts';
import type { AppContext } from '../context.ts';
import type { StreamRegistry } from '../streams/registry.ts';
import { parseClientObject, type StartMessage } from '../streams/protocol.ts';
import { StreamSession } from '../streams/session.ts';
import { ChannelSink } from './control.ts';
import { WhipPublisher } from './ingest.ts';

/** How long a stream made ahead of time (POST /v1/streams) waits for its WHIP publisher, ms. */
export const PUBLISH_TIMEOUT_MS = 10 * 60_000; // time to set up OBS by hand

export interface WebrtcStream {
  readonly session: StreamSession;
  readonly sink: ChannelSink;
  publisher: WhipPublisher | undefined;
}

export class WebrtcStreams {
  private readonly streams = new Map<string, WebrtcStream & { timer: NodeJS.Timeout }>();

  constructor(
    private readonly ctx: AppContext,
    private readonly registry: StreamRegistry,
  ) {}

  /** Opens a stream with these parameters for `client` (the per-client stream limit applies). */
  async open(client: string, start: Record<string, unknown>): Promise<WebrtcStream> {
    if (this.ctx.draining) throw new ServiceError('unavailable', 'the server is shutting down');
    const message = parseClientObject({ type: 'start', window: 16, ...start }) as StartMessage; // type is 'start' by construction
    if (message.mode !== 'img2img') throw new ServiceError('bad_request', 'mode: a WebRTC stream takes its frames from a WHIP publisher (img2img)', { field: 'mode' });
    const release = this.registry.reserve(client, message.name);
    const sink = new ChannelSink();
    let session: StreamSession;
    try {
      session = await StreamSession.open(this.ctx, message, sink);
    } finally {
      release();
    }
    sink.session = session;
    this.registry.add(session, client);
    this.ctx.metrics.streamsActive.set(this.registry.size);
    const stream: WebrtcStream & { timer: NodeJS.Timeout } = { session, sink, publisher: undefined, timer: setTimeout(() => this.end(session.id), PUBLISH_TIMEOUT_MS) };
    stream.timer.unref();
    this.streams.set(session.id, stream);
    session.once('close', () => {
      clearTimeout(stream.timer);
      this.streams.delete(session.id);
      void stream.publisher?.close();
      this.ctx.metrics.streamsActive.set(this.registry.size);
    });
    this.ctx.log.info('stream started', { stream: session.id, client, transport: 'webrtc' });
    return stream;
  }

  get(id: string): WebrtcStream {
    const stream = this.streams.get(id);
    if (!stream) throw new ServiceError('not_found', `no WebRTC stream ${id}`);
    return stream;
  }

  /** Attaches a WHIP publisher to a stream that has none and returns the SDP answer. */
  async publish(id: string, offer: string): Promise<string> {
    const stream = this.streams.get(id);
    if (!stream) throw new ServiceError('not_found', `no WebRTC stream ${id}`);
    if (stream.publisher) throw new ServiceError('conflict', `stream ${id} already has a publisher`);
    const { publisher, answer } = await WhipPublisher.open(this.ctx, stream.session, stream.sink, offer, () => this.end(id));
    if (!this.streams.has(id)) {
      await publisher.close();
      throw new ServiceError('not_found', `stream ${id} ended`);
    }
    clearTimeout(stream.timer);
    stream.publisher = publisher;
    return answer;
  }

  /** Ends a stream: its publisher, viewers and session. False when there is none. */
  end(id: string): boolean {
    const stream = this.streams.get(id);
    if (!stream) return false;
    this.ctx.log.info('stream closed', { stream: id, ...stream.session.stats });
    stream.session.close();
    return true;
  }

  async closeAll(): Promise<void> {
    const publishers = [...this.streams.values()].map((s) => s.publisher);
    for (const id of [...this.streams.keys()]) this.end(id);
    await Promise.all(publishers.map((p) => p?.close()));
  }
}

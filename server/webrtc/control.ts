/**
 * The control data channel: the WebSocket protocol's text messages (server/PROTOCOL.md) over an
 * RTCDataChannel, for streams whose frames travel as WebRTC media. `update`, `ping` and `stop` work as on
 * the WebSocket; the server sends `started`, `updated`, `frame` metadata (latency, lag), `error` and `pong`.
 * Frames themselves never travel on the channel, so `start` and `ack` do not apply.
 */
import type { RTCDataChannel } from 'werift';
import { ServiceError } from '../../models/errors.ts';
import { PROTOCOL_VERSION, errorMessage, parseClientMessage } from '../streams/protocol.ts';
import type { SentFrame, StreamSession, StreamSink } from '../streams/session.ts';

/** A StreamSink that writes JSON to every open control channel of a stream and acks each frame itself. */
export class ChannelSink implements StreamSink {
  readonly encoded = false;
  readonly bufferedAmount = 0;
  private readonly channels = new Set<RTCDataChannel>();
  /** Set once the session exists: frames are acked as they are sent (WebRTC paces media itself). */
  session: StreamSession | undefined;

  add(channel: RTCDataChannel): void {
    this.channels.add(channel);
    channel.stateChanged.subscribe((state) => state === 'closed' && this.channels.delete(channel));
  }

  sendJson(message: object): void {
    const text = JSON.stringify(message);
    for (const channel of this.channels) if (channel.readyState === 'open') channel.send(text);
  }

  sendFrame(frame: SentFrame): void {
    this.sendJson(frame.meta);
    queueMicrotask(() => this.session?.onAck(1));
  }
}

/** The WebSocket's `started` message for this stream, sent when a control channel opens (plus its WHEP URL). */
/** A named stream's WHEP path stays the same across its restarts; an unnamed one is played by id. */
export function whepPath(session: StreamSession): string {
  return session.name === undefined ? `/v1/whep/${session.id}` : `/v1/whep/by-name/${session.name}`;
}

export function startedMessage(session: StreamSession): object {
  const { width, height } = session.size;
  const id = session.id;
  return { type: 'started', protocol: PROTOCOL_VERSION, stream_id: id, name: session.name ?? null, params: session.params, notes: session.notes, width, height, window: null, ...session.outputPaths, whep_url: whepPath(session) };
}

/** Answers one control message from a channel; `stop` calls `onStop` (the owner ends the stream). */
export async function handleControl(session: StreamSession, sink: ChannelSink, text: string, onStop: () => void): Promise<void> {
  const report = (error: unknown) => sink.sendJson(errorMessage(error));
  let message;
  try {
    message = parseClientMessage(text);
  } catch (error) {
    return report(error);
  }
  switch (message.type) {
    case 'update':
      try {
        const params = await session.update(message.params, message);
        sink.sendJson({ type: 'updated', params, notes: session.notes });
      } catch (error) {
        report(error);
      }
      return;
    case 'ping':
      sink.sendJson({ type: 'pong' });
      return;
    case 'stop':
      sink.sendJson({ type: 'stopped', stats: session.stats });
      onStop();
      return;
    case 'ack':
      return; // media is paced by WebRTC: nothing to credit
    case 'start':
      return report(new ServiceError('conflict', 'the stream has already started'));
  }
}

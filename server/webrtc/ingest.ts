/**
 * A WHIP publisher: one peer connection whose video track becomes a stream's input frames. RTP is assembled
 * into frames (rtp-frames.ts), decoded by ffmpeg at the stream's size and handed to the session as raw RGB
 * (StreamSession.onRawFrame: latest-frame-wins there, no JPEG round trip). Audio is negotiated and ignored.
 * A data channel, if the publisher opens one, carries the control messages (control.ts).
 */
import type { RTCPeerConnection, RTCRtpTransceiver, MediaStreamTrack } from 'werift';
import { defaultFfmpeg, type FfmpegPaths } from '../../pipelines/codecs/ffmpeg.ts';
import type { AppContext } from '../context.ts';
import type { StreamSession } from '../streams/session.ts';
import { handleControl, startedMessage, type ChannelSink } from './control.ts';
import { addCandidates, answerOffer, createPeer } from './peer.ts';
import { codecOf, FrameAssembler, type EncodedFrame, type VideoCodec } from './rtp-frames.ts';
import { startDecoder, type VideoDecoder } from './video-codec.ts';

/** At most one picture-loss request this often (ms): a keyframe takes a round trip to arrive. */
const PLI_INTERVAL_MS = 300;
/**
 * A publisher whose media stops this long has gone (ms). A peer that closes without DELETE is otherwise only
 * noticed when ICE consent fails, about 30 s later; encoders keep sending on a still picture (>= 1 fps).
 */
export const MEDIA_TIMEOUT_MS = 10_000;

export class WhipPublisher {
  private decoder: { codec: VideoCodec; width: number; height: number; impl: VideoDecoder } | undefined;
  private closed = false;
  private lastPacketAt = performance.now();
  private watchdog: NodeJS.Timeout | undefined;
  /** Encoded frames received and decoded frames handed to the session. */
  readonly counts = { frames: 0, decoded: 0 };

  private constructor(
    private readonly ctx: AppContext,
    private readonly session: StreamSession,
    private readonly pc: RTCPeerConnection,
    private readonly ffmpeg: FfmpegPaths,
  ) {}

  /** Answers the publisher's offer; `onEnd` runs once when the peer goes away (closed, failed, or `close()`). */
  static async open(ctx: AppContext, session: StreamSession, sink: ChannelSink, offer: string, onEnd: () => void): Promise<{ publisher: WhipPublisher; answer: string }> {
    const ffmpeg = await defaultFfmpeg();
    const pc = createPeer(ctx, 'ingest');
    const publisher = new WhipPublisher(ctx, session, pc, ffmpeg);
    pc.onRemoteTransceiverAdded.subscribe((t) => t.kind === 'video' && t.onTrack.subscribe((track) => publisher.receive(track, t)));
    pc.onDataChannel.subscribe((channel) => {
      sink.add(channel);
      channel.onMessage.subscribe((data) => void handleControl(session, sink, data.toString(), onEnd));
      const greet = () => channel.send(JSON.stringify(startedMessage(session)));
      if (channel.readyState === 'open') greet();
      else channel.stateChanged.subscribe((state) => state === 'open' && greet());
    });
    pc.connectionStateChange.subscribe((state) => {
      if (state === 'failed' || state === 'closed') onEnd();
    });
    publisher.watchdog = setInterval(() => performance.now() - publisher.lastPacketAt > MEDIA_TIMEOUT_MS && onEnd(), 1000);
    publisher.watchdog.unref();
    try {
      return { publisher, answer: await answerOffer(pc, offer) };
    } catch (error) {
      await publisher.close();
      throw error;
    }
  }

  /** The codec being decoded (the publisher's choice among VP8 and H.264), once media flows. */
  get codec(): VideoCodec | undefined {
    return this.decoder?.codec;
  }

  /** Trickle ICE from the publisher (WHIP PATCH). */
  addCandidates(fragment: string): Promise<number> {
    return addCandidates(this.pc, fragment);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watchdog);
    this.decoder?.impl.close();
    this.decoder = undefined;
    await this.pc.close();
  }

  private receive(track: MediaStreamTrack, transceiver: RTCRtpTransceiver): void {
    let lastPli = 0;
    const requestKeyframe = () => {
      const now = performance.now();
      if (now - lastPli < PLI_INTERVAL_MS || track.ssrc === undefined) return;
      lastPli = now;
      void transceiver.receiver.sendRtcpPLI(track.ssrc).catch(() => undefined);
    };
    const assembler = new FrameAssembler(requestKeyframe);
    track.onReceiveRtp.subscribe((packet) => {
      if (this.closed) return;
      this.lastPacketAt = performance.now();
      const negotiated = transceiver.codecs.find((c) => c.payloadType === packet.header.payloadType);
      const codec = negotiated && codecOf(negotiated.mimeType);
      if (!codec) return; // rtx/red/fec payloads: werift's NACK handling covers loss on its own
      const frame = assembler.push(packet, codec);
      if (frame) this.decode(frame, assembler);
    });
  }

  /** Decodes every frame (inter-frame codecs need them all); the session keeps only the newest decoded one. */
  private decode(frame: EncodedFrame, assembler: FrameAssembler): void {
    this.counts.frames++;
    const { width, height } = this.session.size;
    const current = this.decoder;
    if (!current || current.codec !== frame.codec || current.width !== width || current.height !== height) {
      // a new codec or a new stream size (a live update) needs a fresh decoder, which starts at a keyframe
      current?.impl.close();
      this.decoder = undefined;
      if (!frame.keyframe) return assembler.restart();
      const impl = startDecoder(
        this.ffmpeg,
        frame.codec,
        { width, height },
        (rgb) => {
          this.counts.decoded++;
          this.session.onRawFrame(rgb, width, height);
        },
        (line) => this.ctx.log.warn('webrtc decoder', { stream: this.session.id, error: line }),
      );
      this.decoder = { codec: frame.codec, width, height, impl };
    }
    this.decoder!.impl.write(frame);
  }
}

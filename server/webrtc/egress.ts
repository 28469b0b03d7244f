/**
 * WHEP viewers of one stream. One VP8 encoder per stream, started with the first viewer and stopped with the
 * last, takes the session's raw outputs (the `output` event); each encoded frame is packetized once and sent
 * to every viewer's sender (werift gives each its own SSRC and sequence offset). RTP timestamps follow the
 * arrival times of the input frames shown, so players render at the input's pace. A new viewer or a
 * picture-loss request restarts the encoder, whose first frame is a keyframe.
 */
import { randomUUID } from 'node:crypto';
import type { RTCPeerConnection, RTCRtpSender } from 'werift';
import { ServiceError } from '../../models/errors.ts';
import { defaultFfmpeg, type FfmpegPaths } from '../../pipelines/codecs/ffmpeg.ts';
import type { AppContext } from '../context.ts';
import type { LiveStream } from '../streams/registry.ts';
import type { RawOutput } from '../streams/session.ts';
import { addCandidates, answerOffer, createPeer } from './peer.ts';
import { packetizeVp8 } from './rtp-frames.ts';
import { startVp8Encoder, type Vp8Encoder } from './video-codec.ts';

/** Viewers per stream: each costs a peer connection and its SRTP; the encoder is shared. */
export const MAX_VIEWERS = 32;
/** At most one encoder restart (keyframe) this often for picture-loss requests, ms. */
const KEYFRAME_INTERVAL_MS = 1000;
const RTP_CLOCK_PER_MS = 90;

interface Viewer {
  readonly pc: RTCPeerConnection;
  readonly sender: RTCRtpSender;
}

export class StreamEgress {
  private static readonly egresses = new WeakMap<LiveStream, StreamEgress>();
  private readonly viewers = new Map<string, Viewer>();
  private encoder: { impl: Vp8Encoder; width: number; height: number; arrivals: number[] } | undefined;
  private lastKeyframeRequest = -Infinity;
  private sequence = 0;
  private lastTimestamp = -1;
  private readonly epoch = performance.now();
  private readonly onOutput = (out: RawOutput) => this.encode(out);
  /** Frames encoded and packets sent (to all viewers). */
  readonly counts = { encoded: 0, packets: 0 };

  private constructor(
    private readonly ctx: AppContext,
    private readonly session: LiveStream,
    private readonly ffmpeg: FfmpegPaths,
  ) {
    session.once('close', () => void this.closeAll());
  }

  /** The stream's egress, created on first use. */
  static async of(ctx: AppContext, session: LiveStream): Promise<StreamEgress> {
    const existing = StreamEgress.egresses.get(session);
    if (existing) return existing;
    const egress = new StreamEgress(ctx, session, await defaultFfmpeg());
    StreamEgress.egresses.set(session, egress);
    return egress;
  }

  get viewerCount(): number {
    return this.viewers.size;
  }

  /** Answers a viewer's offer (recvonly video); the viewer's id names its WHEP resource. */
  async addViewer(offer: string): Promise<{ id: string; answer: string }> {
    if (this.viewers.size >= MAX_VIEWERS) throw new ServiceError('rate_limited', `this stream already has ${MAX_VIEWERS} viewers`);
    const pc = createPeer(this.ctx, 'egress');
    const id = randomUUID();
    let answer: string;
    let sender: RTCRtpSender | undefined;
    try {
      answer = await answerOffer(pc, offer, () => {
        // the offer's video section is recvonly: this side sends (werift would answer inactive otherwise)
        const video = pc.getTransceivers().find((t) => t.kind === 'video');
        video?.setDirection('sendonly');
        sender = video?.sender;
      });
    } catch (error) {
      await pc.close();
      throw error;
    }
    if (!sender) {
      await pc.close();
      throw new ServiceError('bad_request', 'the offer has no video section');
    }
    this.viewers.set(id, { pc, sender });
    sender.onPictureLossIndication.subscribe(() => this.requestKeyframe(false));
    pc.connectionStateChange.subscribe((state) => {
      if (state === 'connected') this.requestKeyframe(true);
      if (state === 'failed' || state === 'closed') void this.removeViewer(id);
    });
    if (this.viewers.size === 1) this.session.on('output', this.onOutput);
    return { id, answer };
  }

  has(id: string): boolean {
    return this.viewers.has(id);
  }

  addCandidates(id: string, fragment: string): Promise<number> {
    const viewer = this.viewers.get(id);
    if (!viewer) throw new ServiceError('not_found', `no viewer ${id}`);
    return addCandidates(viewer.pc, fragment);
  }

  async removeViewer(id: string): Promise<boolean> {
    const viewer = this.viewers.get(id);
    if (!viewer) return false;
    this.viewers.delete(id);
    if (this.viewers.size === 0) {
      this.session.off('output', this.onOutput);
      this.stopEncoder();
    }
    await viewer.pc.close();
    return true;
  }

  private async closeAll(): Promise<void> {
    await Promise.all([...this.viewers.keys()].map((id) => this.removeViewer(id)));
  }

  /** A new viewer always gets a keyframe at once; picture-loss requests at most once a second. */
  private requestKeyframe(force: boolean): void {
    const now = performance.now();
    if (!force && now - this.lastKeyframeRequest < KEYFRAME_INTERVAL_MS) return;
    this.lastKeyframeRequest = now;
    this.stopEncoder(); // the next output starts a new encoder, whose first frame is a keyframe
  }

  private stopEncoder(): void {
    this.encoder?.impl.close();
    this.encoder = undefined;
  }

  private encode(out: RawOutput): void {
    const { width, height } = out;
    if (this.encoder && (this.encoder.width !== width || this.encoder.height !== height)) this.stopEncoder();
    if (!this.encoder) {
      const arrivals: number[] = [];
      const impl = startVp8Encoder(
        this.ffmpeg,
        { width, height },
        (vp8) => this.send(vp8, arrivals.shift() ?? performance.now()),
        (line) => this.ctx.log.warn('webrtc encoder', { stream: this.session.id, error: line }),
      );
      this.encoder = { impl, width, height, arrivals };
    }
    this.encoder.arrivals.push(out.arrivedAt);
    this.encoder.impl.write(out.rgb);
  }

  private send(vp8: Buffer, arrivedAt: number): void {
    this.counts.encoded++;
    // 90 kHz from the shown input's arrival, strictly increasing (a repeated input still moves the clock)
    const timestamp = Math.max(this.lastTimestamp + 1, Math.round((arrivedAt - this.epoch) * RTP_CLOCK_PER_MS));
    this.lastTimestamp = timestamp;
    const packets = packetizeVp8(vp8, timestamp, this.sequence);
    this.sequence = (this.sequence + packets.length) & 0xffff;
    for (const packet of packets) {
      const bytes = packet.serialize(); // each sender rewrites its own copy's SSRC, payload type and offsets
      for (const viewer of this.viewers.values()) void viewer.sender.sendRtp(bytes).catch(() => undefined);
      this.counts.packets++;
    }
  }
}

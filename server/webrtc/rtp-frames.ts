/**
 * RTP <-> encoded video frames. In: packets of one RTP timestamp are collected up to the marker bit, checked
 * for gaps and depacketized by werift (VP8: RFC 7741; H.264: RFC 6184, single NAL / STAP-A / FU-A -> Annex B).
 * A frame with a gap is dropped and the decoder waits for the next keyframe (the caller sends a PLI). Out:
 * werift has no VP8 packetizer, so `packetizeVp8` writes RFC 7741's one-byte payload descriptor itself.
 */
import { dePacketizeRtpPackets, RtpHeader, RtpPacket } from 'werift';

export type VideoCodec = 'vp8' | 'h264';

/** The codec of a negotiated RTP payload, by its MIME type; undefined for others (rtx, red, ...). */
export function codecOf(mimeType: string): VideoCodec | undefined {
  const m = mimeType.toLowerCase();
  return m === 'video/vp8' ? 'vp8' : m === 'video/h264' ? 'h264' : undefined;
}

export interface EncodedFrame {
  readonly codec: VideoCodec;
  readonly data: Buffer;
  readonly keyframe: boolean;
  /** RTP timestamp, 90 kHz. */
  readonly timestamp: number;
}

const DEPACKETIZER: Record<VideoCodec, 'VP8' | 'MPEG4/ISO/AVC'> = { vp8: 'VP8', h264: 'MPEG4/ISO/AVC' };

/** Collects one video SSRC's packets into frames. `push` returns a frame when one completes cleanly. */
export class FrameAssembler {
  private packets: RtpPacket[] = [];
  private timestamp: number | undefined;
  /** Sequence number of the last packet of the last complete frame. */
  private lastSequence: number | undefined;
  private waitingForKeyframe = true;
  /** Frames dropped for a gap or for following a gap before a keyframe. */
  dropped = 0;

  /** Called when the decoder needs a keyframe (start, or a gap): the owner sends a PLI. */
  constructor(private readonly onNeedKeyframe: () => void) {}

  push(packet: RtpPacket, codec: VideoCodec): EncodedFrame | undefined {
    const { timestamp, marker } = packet.header;
    if (this.timestamp !== undefined && timestamp !== this.timestamp) this.lose(); // the old frame never got its marker
    this.timestamp = timestamp;
    this.packets.push(packet);
    if (!marker) return undefined;
    const packets = this.packets.sort((a, b) => seqDiff(a.header.sequenceNumber, b.header.sequenceNumber));
    this.packets = [];
    this.timestamp = undefined;
    const first = packets[0]!.header.sequenceNumber;
    const contiguous = packets.every((p, i) => p.header.sequenceNumber === ((first + i) & 0xffff));
    const follows = this.lastSequence === undefined || first === ((this.lastSequence + 1) & 0xffff);
    this.lastSequence = packets[packets.length - 1]!.header.sequenceNumber;
    if (!contiguous) return this.lose();
    const { data, isKeyframe } = dePacketizeRtpPackets(DEPACKETIZER[codec], packets);
    if (!follows && !isKeyframe) return this.lose();
    if (this.waitingForKeyframe && !isKeyframe) {
      this.dropped++;
      this.onNeedKeyframe();
      return undefined;
    }
    this.waitingForKeyframe = false;
    return { codec, data, keyframe: isKeyframe, timestamp };
  }

  /** Drops everything up to the next keyframe and asks for one (a new decoder must start on a keyframe). */
  restart(): undefined {
    return this.lose();
  }

  private lose(): undefined {
    this.packets = [];
    this.timestamp = undefined;
    this.dropped++;
    this.waitingForKeyframe = true;
    this.onNeedKeyframe();
    return undefined;
  }
}

/** a - b for 16-bit sequence numbers that wrap. */
function seqDiff(a: number, b: number): number {
  return ((a - b + 0x8000) & 0xffff) - 0x8000;
}

/** Largest RTP payload: keeps packets under a 1200-byte path MTU with headers and SRTP's tag. */
export const MAX_PAYLOAD = 1100;

/** Splits one VP8 frame into RTP packets (RFC 7741: S bit on the first, marker on the last, PID 0). */
export function packetizeVp8(frame: Buffer, timestamp: number, firstSequence: number): RtpPacket[] {
  const packets: RtpPacket[] = [];
  for (let offset = 0, i = 0; offset < frame.length; offset += MAX_PAYLOAD, i++) {
    const chunk = frame.subarray(offset, offset + MAX_PAYLOAD);
    const descriptor = Buffer.from([offset === 0 ? 0x10 : 0x00]);
    const header = new RtpHeader({ sequenceNumber: (firstSequence + i) & 0xffff, timestamp: timestamp >>> 0, marker: offset + MAX_PAYLOAD >= frame.length, payloadType: 96 });
    packets.push(new RtpPacket(header, Buffer.concat([descriptor, chunk])));
  }
  return packets;
}

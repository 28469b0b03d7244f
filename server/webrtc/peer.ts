/**
 * The server's side of a WebRTC peer connection (werift): codecs per role, the answer to an offer with
 * every host candidate gathered (no trickle needed), and remote candidates added later (WHIP/WHEP PATCH).
 */
import { RTCPeerConnection, RTCRtpCodecParameters, type PeerConfig } from 'werift';
import { ServiceError } from '../../models/errors.ts';
import { isLoopback } from '../config.ts';
import type { AppContext } from '../context.ts';
import { icePeerOptions } from './ice.ts';

const VIDEO_FEEDBACK = [{ type: 'nack' }, { type: 'nack', parameter: 'pli' }, { type: 'ccm', parameter: 'fir' }];
const vp8 = () => new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90_000, rtcpFeedback: VIDEO_FEEDBACK });
// werift matches offered codecs by MIME type and keeps the offer's own parameters (profile, packetization).
const h264 = () => new RTCRtpCodecParameters({ mimeType: 'video/H264', clockRate: 90_000, rtcpFeedback: VIDEO_FEEDBACK, parameters: 'profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1' });
// Audio is accepted so that an offer with audio (OBS sends Opus) negotiates; its packets are ignored.
const opus = () => new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48_000, channels: 2 });

/** Ingest (WHIP) decodes VP8 and H.264; egress (WHEP) sends VP8. */
export type PeerRole = 'ingest' | 'egress';

export function createPeer(ctx: AppContext, role: PeerRole): RTCPeerConnection {
  const codecs: PeerConfig['codecs'] = role === 'ingest' ? { video: [vp8(), h264()], audio: [opus()] } : { video: [vp8()], audio: [opus()] };
  return new RTCPeerConnection({ codecs, ...icePeerOptions(isLoopback(ctx.config.host), ctx.config.iceServers) });
}

/** Largest SDP accepted (an offer with many codecs and candidates is a few kB). */
export const MAX_SDP_BYTES = 64 * 1024;

/**
 * Applies the client's offer and returns the complete answer (candidates included). Bad SDP -> bad_request.
 * `prepare` runs between the offer and the answer (a sender sets its transceivers to sendonly there).
 */
export async function answerOffer(pc: RTCPeerConnection, offer: string, prepare?: () => void): Promise<string> {
  if (!offer.startsWith('v=0')) throw new ServiceError('bad_request', 'the body must be an SDP offer (application/sdp, starting with v=0)');
  if (!/^m=video /m.test(offer)) throw new ServiceError('bad_request', 'the offer has no video section');
  try {
    await pc.setRemoteDescription({ type: 'offer', sdp: offer });
    prepare?.();
    await pc.setLocalDescription(await pc.createAnswer());
  } catch (cause) {
    const message = (cause as Error).message;
    if (/codec/i.test(message)) throw new ServiceError('bad_request', 'the offer has no codec this server takes (video: VP8 or H.264 in, VP8 out)', { cause });
    throw new ServiceError('bad_request', `cannot use the offer: ${message}`, { cause });
  }
  const answer = pc.localDescription?.sdp;
  if (!answer) throw new ServiceError('internal', 'no answer was created');
  return answer;
}

/**
 * Trickle ICE (RFC 8840 SDP fragment, as WHIP/WHEP PATCH sends it): adds each `a=candidate` line. An
 * `a=end-of-candidates` line is accepted and needs nothing: the server's own candidates are all in its answer.
 */
export async function addCandidates(pc: RTCPeerConnection, fragment: string): Promise<number> {
  let mid: string | undefined;
  let added = 0;
  for (const raw of fragment.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('a=mid:')) mid = line.slice(6);
    if (!line.startsWith('a=candidate:')) continue;
    try {
      await pc.addIceCandidate({ candidate: line.slice(2), sdpMid: mid ?? '0', sdpMLineIndex: mid === undefined ? 0 : null });
      added++;
    } catch (cause) {
      throw new ServiceError('bad_request', `bad candidate "${line.slice(0, 80)}": ${(cause as Error).message}`, { cause });
    }
  }
  return added;
}

/** Resolves on 'connected'; rejects on 'failed'/'closed' or after `timeoutMs`. */
export function connected(pc: RTCPeerConnection, timeoutMs: number): Promise<void> {
  if (pc.connectionState === 'connected') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`not connected after ${timeoutMs} ms`)), timeoutMs);
    const { unSubscribe } = pc.connectionStateChange.subscribe((state) => {
      if (state === 'connected') done();
      else if (state === 'failed' || state === 'closed') done(new Error(`connection ${state}`));
    });
    function done(error?: Error) {
      clearTimeout(timer);
      unSubscribe();
      if (error) reject(error);
      else resolve();
    }
  });
}

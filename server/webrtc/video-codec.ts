/**
 * Video codecs through ffmpeg processes (one per direction per stream): VP8 or H.264 in -> RGB frames at the
 * stream's size (scaled to cover and centre-cropped, as the WebSocket path's image decode does); RGB out ->
 * VP8 (libvpx, realtime, no look-ahead). No maintained npm package decodes H.264 in process on Node 20
 * (server/webrtc/README.md has the measurements); ffmpeg is already a dependency for video.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ServiceError } from '../../models/errors.ts';
import type { FfmpegPaths } from '../../pipelines/codecs/ffmpeg.ts';
import type { EncodedFrame, VideoCodec } from './rtp-frames.ts';

interface Size {
  readonly width: number;
  readonly height: number;
}

/** Flags that keep ffmpeg from buffering: tiny probe, one decoder thread (no frame-thread delay), every packet flushed. */
const LOW_DELAY_IN = ['-probesize', '32', '-analyzeduration', '0', '-threads', '1'];
const LOW_DELAY_OUT = ['-fps_mode', 'passthrough', '-flush_packets', '1'];
/** H.264 access unit delimiter: written after each frame so ffmpeg's parser closes the frame at once. */
const H264_AUD = Buffer.from([0, 0, 0, 1, 9, 0xf0]);

function start(paths: FfmpegPaths, args: string[], onStderr: (line: string) => void): ChildProcess {
  const child = spawn(paths.ffmpeg, ['-hide_banner', '-nostdin', '-loglevel', 'error', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => undefined); // EPIPE after ffmpeg exits: the exit is reported instead
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => s.split('\n').filter(Boolean).forEach(onStderr));
  return child;
}

function stop(child: ChildProcess): void {
  child.stdin?.end();
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** An IVF file header (VP8 in): ffmpeg's IVF demuxer needs it before the first frame. */
function ivfHeader(width: number, height: number): Buffer {
  const h = Buffer.alloc(32);
  h.write('DKIF', 0, 'latin1');
  h.writeUInt16LE(32, 6);
  h.write('VP80', 8, 'latin1');
  h.writeUInt16LE(width, 12);
  h.writeUInt16LE(height, 14);
  h.writeUInt32LE(90_000, 16); // time base 1/90000: RTP's video clock
  h.writeUInt32LE(1, 20);
  return h;
}

export interface VideoDecoder {
  /** Feeds one encoded frame; decoded RGB frames arrive through `onFrame`. */
  write(frame: EncodedFrame): void;
  close(): void;
}

/** Starts a decoder for `codec` whose output frames are interleaved RGB of `size`. */
export function startDecoder(paths: FfmpegPaths, codec: VideoCodec, size: Size, onFrame: (rgb: Buffer) => void, onError: (message: string) => void): VideoDecoder {
  const { width, height } = size;
  const input = codec === 'vp8' ? ['-f', 'ivf'] : ['-f', 'h264'];
  const scale = `scale=${width}:${height}:force_original_aspect_ratio=increase,crop=${width}:${height}`;
  const child = start(paths, [...LOW_DELAY_IN, ...input, '-i', 'pipe:0', '-vf', scale, ...LOW_DELAY_OUT, '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'], onError);
  if (codec === 'vp8') child.stdin!.write(ivfHeader(width, height));
  const frameBytes = width * height * 3;
  let chunks: Buffer[] = [];
  let buffered = 0;
  child.stdout!.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    buffered += chunk.length;
    if (buffered < frameBytes) return;
    let all = Buffer.concat(chunks);
    while (all.length >= frameBytes) {
      onFrame(all.subarray(0, frameBytes));
      all = all.subarray(frameBytes);
    }
    chunks = all.length ? [all] : [];
    buffered = all.length;
  });
  let pts = 0n;
  return {
    write(frame) {
      if (child.exitCode !== null || child.stdin!.destroyed) return;
      if (codec === 'vp8') {
        const header = Buffer.alloc(12);
        header.writeUInt32LE(frame.data.length, 0);
        header.writeBigUInt64LE(pts++, 4);
        child.stdin!.write(Buffer.concat([header, frame.data]));
      } else {
        child.stdin!.write(Buffer.concat([frame.data, H264_AUD]));
      }
    },
    close: () => stop(child),
  };
}

export interface Vp8Encoder {
  /** Encodes one interleaved RGB frame of the encoder's size; the VP8 frame arrives through `onFrame`. */
  write(rgb: Uint8Array): void;
  close(): void;
}

/** Bits per second for a frame size: about 0.3 bits per pixel at 30 fps, at least 400 kbit/s. */
export function vp8Bitrate(width: number, height: number): number {
  return Math.max(400_000, Math.round(width * height * 30 * 0.3));
}

/** Frames between keyframes when no viewer asks for one (a new viewer restarts the encoder instead). */
const KEYFRAME_INTERVAL = 120;

/** Starts a realtime VP8 encoder: RGB frames in, IVF frames out (parsed here), no frame held back. */
export function startVp8Encoder(paths: FfmpegPaths, size: Size, onFrame: (vp8: Buffer, keyframe: boolean) => void, onError: (message: string) => void): Vp8Encoder {
  const { width, height } = size;
  const child = start(
    paths,
    [
      '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-framerate', '30', '-i', 'pipe:0',
      '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-lag-in-frames', '0', '-auto-alt-ref', '0', '-error-resilient', '1',
      '-threads', '1', '-b:v', String(vp8Bitrate(width, height)), '-g', String(KEYFRAME_INTERVAL), '-pix_fmt', 'yuv420p',
      ...LOW_DELAY_OUT, '-f', 'ivf', 'pipe:1',
    ],
    onError,
  );
  let buffer: Buffer = Buffer.alloc(0);
  let headerSeen = false;
  child.stdout!.on('data', (chunk: Buffer) => {
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
    if (!headerSeen) {
      if (buffer.length < 32) return;
      buffer = buffer.subarray(32);
      headerSeen = true;
    }
    while (buffer.length >= 12) {
      const size = buffer.readUInt32LE(0);
      if (buffer.length < 12 + size) break;
      const frame = buffer.subarray(12, 12 + size);
      buffer = buffer.subarray(12 + size);
      onFrame(frame, (frame[0]! & 1) === 0); // VP8 frame tag: bit 0 clear on a keyframe (RFC 6386 §9.1)
    }
  });
  return {
    write(rgb) {
      if (rgb.length !== width * height * 3) throw new ServiceError('internal', `encoder takes ${width}x${height} RGB, got ${rgb.length} bytes`);
      if (child.exitCode === null && !child.stdin!.destroyed) child.stdin!.write(rgb);
    },
    close: () => stop(child),
  };
}

/**
 * ffmpeg, spawned directly (REFERENCE §7: no fluent-ffmpeg). Resolution order (REFERENCE §8): FFMPEG_PATH,
 * then ffmpeg-static when its binary exists, then `ffmpeg` on PATH; none -> ServiceError 'ffmpeg_missing'.
 * Probing uses ffprobe beside the binary (or FFPROBE_PATH) and falls back to parsing `ffmpeg -i`.
 * Decoding yields raw RGB frames at a target size; encoding takes raw RGB frames to H.264 MP4 with the
 * source's audio. Every process is killed (SIGKILL) when its AbortSignal fires or its consumer stops.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { once } from 'node:events';
import { basename, delimiter, dirname, join } from 'node:path';
import { ServiceError } from '../../models/errors.ts';
import type { Fit } from './image.ts';

export interface FfmpegPaths {
  readonly ffmpeg: string;
  /** ffprobe beside ffmpeg (or FFPROBE_PATH), when there is one. */
  readonly ffprobe: string | undefined;
  readonly source: 'FFMPEG_PATH' | 'ffmpeg-static' | 'PATH';
}

export interface VideoInfo {
  readonly width: number;
  readonly height: number;
  /** Frame rate as ffmpeg writes it ("30000/1001", "25/1", or "29.97" from the fallback parser). */
  readonly frameRate: string;
  readonly fps: number;
  /** Seconds; 0 when unknown. */
  readonly duration: number;
  /** Frame count from the container, else duration x fps (used for progress only). */
  readonly frames: number;
  readonly audio: { readonly codec: string } | undefined;
}

/** Last bytes of stderr kept for error messages. */
const STDERR_TAIL_BYTES = 4096;
const EXE = process.platform === 'win32' ? '.exe' : '';

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** ffmpeg-static's default export: the binary's path, or null when its install step could not fetch it. */
async function ffmpegStaticPath(): Promise<string | undefined> {
  const name = 'ffmpeg-static'; // an optionalDependency: a variable keeps TypeScript from requiring it
  try {
    const mod = (await import(name)) as { default?: unknown };
    return typeof mod.default === 'string' ? mod.default : undefined;
  } catch {
    return undefined;
  }
}

export interface ResolveOptions {
  /** Where ffmpeg-static's binary is (tests override it); default: the package's export. */
  readonly staticPath?: () => Promise<string | undefined>;
}

/** Finds ffmpeg: FFMPEG_PATH (must exist), ffmpeg-static, then PATH. */
export async function resolveFfmpeg(env: NodeJS.ProcessEnv = process.env, options: ResolveOptions = {}): Promise<FfmpegPaths> {
  const withProbe = async (ffmpeg: string, source: FfmpegPaths['source']): Promise<FfmpegPaths> => {
    const candidates = [env['FFPROBE_PATH'], join(dirname(ffmpeg), `ffprobe${EXE}`)].filter((p): p is string => !!p);
    let ffprobe: string | undefined;
    for (const p of candidates) if (!ffprobe && (await executable(p))) ffprobe = p;
    return { ffmpeg, ffprobe, source };
  };
  // 1. FFMPEG_PATH: an explicit choice; a wrong one is an error, not a reason to look elsewhere
  const explicit = env['FFMPEG_PATH'];
  if (explicit) {
    if (await executable(explicit)) return withProbe(explicit, 'FFMPEG_PATH');
    throw new ServiceError('ffmpeg_missing', `FFMPEG_PATH is set to ${explicit}, which is not an executable file`);
  }
  // 2. ffmpeg-static, when its download succeeded
  const bundled = await (options.staticPath ?? ffmpegStaticPath)();
  if (bundled && (await executable(bundled))) return withProbe(bundled, 'ffmpeg-static');
  // 3. PATH
  for (const dir of (env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, `ffmpeg${EXE}`);
    if (await executable(candidate)) return withProbe(candidate, 'PATH');
  }
  throw new ServiceError(
    'ffmpeg_missing',
    'video needs ffmpeg and none was found: set FFMPEG_PATH, install the ffmpeg-static package, or put ffmpeg on PATH (Debian: apt-get install ffmpeg)',
  );
}

let cached: Promise<FfmpegPaths> | undefined;

/** resolveFfmpeg() for this process's environment, remembered once found. */
export function defaultFfmpeg(): Promise<FfmpegPaths> {
  cached ??= resolveFfmpeg().catch((error: unknown) => {
    cached = undefined; // an ffmpeg installed later is found on the next try
    throw error;
  });
  return cached;
}

interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/** Collects the tail of stderr and resolves when the process has exited and closed its pipes. */
function watch(child: ChildProcess): Promise<Finished> {
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    tail = (tail + s).slice(-STDERR_TAIL_BYTES);
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stderr: tail.trim() }));
  });
}

function lastLines(text: string, n = 3): string {
  return text.split('\n').filter(Boolean).slice(-n).join(' | ') || 'no error output';
}

function spawnFfmpeg(bin: string, args: readonly string[], signal: AbortSignal | undefined, stdin: 'pipe' | 'ignore'): ChildProcess {
  return spawn(bin, ['-hide_banner', '-nostdin', ...args], {
    stdio: [stdin, 'pipe', 'pipe'],
    ...(signal ? { signal } : {}),
    killSignal: 'SIGKILL',
  });
}

/** Parses "30000/1001" or "29.97" into frames per second (0 when unusable). */
export function parseRate(rate: string | undefined): number {
  if (!rate) return 0;
  const [num, den] = rate.split('/').map(Number);
  const fps = den === undefined ? num! : num! / den;
  return Number.isFinite(fps) && fps > 0 ? fps : 0;
}

/** Reads `ffmpeg -i` stderr (the fallback when there is no ffprobe). */
export function parseFfmpegInfo(stderr: string): VideoInfo | undefined {
  const video = /Stream #\d+:\d+[^:]*: Video: [^\n]*?(\d{2,5})x(\d{2,5})[^\n]*/.exec(stderr);
  if (!video) return undefined;
  const rate = /([\d.]+) fps/.exec(video[0])?.[1] ?? /([\d.]+) tbr/.exec(video[0])?.[1];
  const d = /Duration: (\d+):(\d+):([\d.]+)/.exec(stderr);
  const duration = d ? Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]) : 0;
  const audio = /Stream #\d+:\d+[^:]*: Audio: (\w+)/.exec(stderr);
  const fps = parseRate(rate);
  return {
    width: Number(video[1]),
    height: Number(video[2]),
    frameRate: rate ?? '25',
    fps: fps || 25,
    duration,
    frames: Math.round(duration * (fps || 25)),
    audio: audio ? { codec: audio[1]! } : undefined,
  };
}

interface ProbeStream {
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  nb_frames?: string;
  duration?: string;
}

function undecodable(file: string, detail: string): ServiceError {
  const name = basename(file);
  // the server's folders and ffmpeg's pointers are no business of the client
  const clean = detail.split(file).join(name).replace(/ @ 0x[0-9a-f]+/g, '');
  return new ServiceError('bad_request', `cannot decode video ${name}: ${clean}`, { field: 'video' });
}

/** Size, frame rate, duration, frame count and audio codec of a video file. Undecodable -> bad_request. */
export async function probeVideo(paths: FfmpegPaths, file: string, signal?: AbortSignal): Promise<VideoInfo> {
  if (!paths.ffprobe) {
    const child = spawnFfmpeg(paths.ffmpeg, ['-i', file], signal, 'ignore');
    child.stdout?.resume();
    const done = await watch(child);
    const info = parseFfmpegInfo(done.stderr);
    if (!info) throw undecodable(file, lastLines(done.stderr));
    return info;
  }
  const child = spawn(paths.ffprobe, ['-v', 'error', '-print_format', 'json', '-show_streams', '-show_format', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(signal ? { signal } : {}),
    killSignal: 'SIGKILL',
  });
  let out = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => (out += s));
  const done = await watch(child);
  let parsed: { streams?: ProbeStream[]; format?: { duration?: string } };
  try {
    parsed = JSON.parse(out) as typeof parsed;
  } catch {
    throw undecodable(file, lastLines(done.stderr));
  }
  const video = parsed.streams?.find((s) => s.codec_type === 'video');
  if (done.code !== 0 || !video?.width || !video.height) throw undecodable(file, done.code !== 0 ? lastLines(done.stderr) : 'no video stream');
  const audio = parsed.streams?.find((s) => s.codec_type === 'audio');
  const frameRate = parseRate(video.avg_frame_rate) > 0 ? video.avg_frame_rate! : (video.r_frame_rate ?? '25');
  const fps = parseRate(frameRate) || 25;
  const duration = Number(parsed.format?.duration ?? video.duration ?? 0) || 0;
  const nb = Number(video.nb_frames);
  return {
    width: video.width,
    height: video.height,
    frameRate,
    fps,
    duration,
    frames: Number.isInteger(nb) && nb > 0 ? nb : Math.round(duration * fps),
    audio: audio ? { codec: audio.codec_name ?? 'unknown' } : undefined,
  };
}

export interface FrameSize {
  readonly width: number;
  readonly height: number;
}

/**
 * Decodes the first video stream to raw RGB24 frames of exactly width x height (scaled to cover and centre
 * cropped, or with `fit: pad` scaled to fit and padded with black), one per source frame (no frame-rate
 * conversion). Stopping the loop or aborting kills ffmpeg.
 */
export async function* decodeFrames(paths: FfmpegPaths, file: string, size: FrameSize, fit: Fit = 'crop', signal?: AbortSignal): AsyncGenerator<Buffer> {
  const { width, height } = size;
  const filter =
    fit === 'pad'
      ? `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2:black`
      : `scale=${width}:${height}:force_original_aspect_ratio=increase,crop=${width}:${height}`;
  const child = spawnFfmpeg(
    paths.ffmpeg,
    ['-loglevel', 'error', '-i', file, '-map', '0:v:0', '-vf', filter, '-fps_mode', 'passthrough', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'],
    signal,
    'ignore',
  );
  const finished = watch(child);
  finished.catch(() => undefined); // awaited below; avoid an unhandled rejection when the loop stops early
  const frameBytes = width * height * 3;
  let chunks: Buffer[] = [];
  let buffered = 0;
  try {
    for await (const chunk of child.stdout! as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      buffered += chunk.length;
      if (buffered < frameBytes) continue;
      let all = Buffer.concat(chunks, buffered);
      while (all.length >= frameBytes) {
        yield all.subarray(0, frameBytes);
        all = all.subarray(frameBytes);
      }
      chunks = all.length > 0 ? [Buffer.from(all)] : [];
      buffered = all.length;
    }
    const done = await finished;
    signal?.throwIfAborted();
    if (done.code !== 0) throw undecodable(file, lastLines(done.stderr));
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

export interface EncoderOptions {
  readonly output: string;
  readonly width: number;
  readonly height: number;
  /** Output frame rate, as probed from the source ("30000/1001"). */
  readonly frameRate: string;
  /** Copy (AAC) or re-encode to AAC the first audio stream of this file. */
  readonly audioFrom?: { readonly file: string; readonly codec: string };
  readonly signal?: AbortSignal;
}

export interface VideoEncoder {
  /** Writes one RGB24 frame, waiting while ffmpeg's input pipe is full. */
  write(frame: Uint8Array): Promise<void>;
  /** Closes the input and waits for the MP4 to be complete. */
  finish(): Promise<void>;
  /** Stops at once (the output is incomplete). */
  kill(): void;
}

/** Starts ffmpeg encoding raw RGB24 frames to H.264 (libx264, yuv420p) MP4, with the source's audio. */
export function startEncoder(paths: FfmpegPaths, options: EncoderOptions): VideoEncoder {
  const { width, height } = options;
  const audio = options.audioFrom;
  const args = [
    '-loglevel', 'error', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-framerate', options.frameRate, '-i', 'pipe:0',
    ...(audio ? ['-i', audio.file, '-map', '0:v:0', '-map', '1:a:0', '-c:a', audio.codec === 'aac' ? 'copy' : 'aac'] : ['-map', '0:v:0']),
    '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', '-movflags', '+faststart', '-f', 'mp4', options.output,
  ];
  const child = spawnFfmpeg(paths.ffmpeg, args, options.signal, 'pipe');
  const finished = watch(child);
  finished.catch(() => undefined);
  const stdin = child.stdin!;
  stdin.on('error', () => undefined); // EPIPE when ffmpeg dies: reported by finish() with its stderr
  const failure = async (): Promise<ServiceError> => {
    const done = await finished.catch((e: unknown) => ({ code: -1, signal: null, stderr: String(e) }));
    options.signal?.throwIfAborted();
    return new ServiceError('internal', `ffmpeg could not encode ${basename(options.output)}: ${lastLines(done.stderr)}`);
  };
  return {
    async write(frame) {
      if (child.exitCode !== null || stdin.destroyed) throw await failure();
      if (stdin.write(frame)) return;
      const closed = finished.then(() => 'closed' as const, () => 'closed' as const);
      const result = await Promise.race([once(stdin, 'drain').then(() => 'drained' as const), closed]);
      if (result === 'closed') throw await failure();
    },
    async finish() {
      stdin.end();
      const done = await finished.catch(async () => {
        throw await failure();
      });
      if (done.code !== 0) throw await failure();
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

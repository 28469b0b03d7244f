/**
 * A video file through the stream pipeline: ffmpeg decodes every frame to RGB at the render size (by default
 * the largest with the source's aspect within the model's pixel budget; `fit` crops or pads the rest), one
 * StreamPipeline renders them in order (SSF on, the stream's initial noise reused for every frame, so a
 * still scene stays still), ffmpeg encodes H.264 MP4 at the source's frame rate with its audio.
 * The stream batch lags n - 1 frames (n = steps): the first n - 1 outputs are dropped and the last frame
 * is fed n - 1 more times (filter off), so output frame i shows input frame i and the counts match.
 */
import { rename, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { ServiceError } from '../models/errors.ts';
import type { Engine } from './engine.ts';
import type { GenerationParams } from './params.ts';
import { BATCH_DEFAULTS, type PlanDefaults, type RunnerFactory } from './plan.ts';
import { StreamPipeline } from './stream-pipeline.ts';
import { decodeFrames, defaultFfmpeg, probeVideo, startEncoder, type FfmpegPaths, type VideoInfo } from './codecs/ffmpeg.ts';

export interface VideoRenderOptions {
  readonly input: string;
  /** The MP4 to write (written beside as a temporary file, renamed when complete). */
  readonly output: string;
  readonly params: GenerationParams;
  /** UNet runners (the server's batcher); default: the engine's own. */
  readonly runners?: RunnerFactory;
  /** Unset parameters (the VAE): batch defaults unless the server says otherwise. */
  readonly defaults?: PlanDefaults;
  readonly ffmpeg?: FfmpegPaths;
  readonly signal?: AbortSignal;
  /** After each written frame: frames done, frames expected (from the probe; may be off by a few). */
  readonly onProgress?: (done: number, expected: number, stats: VideoStats) => void;
}

export interface VideoStats {
  readonly frames: number;
  /** Frames the similarity filter skipped (no model ran; the previous output repeats). */
  readonly skipped: number;
  readonly skip_rate: number;
  /** Rendered frames per second of wall time (decode, render and encode together). */
  readonly render_fps: number;
  readonly width: number;
  readonly height: number;
  readonly source_fps: number;
  readonly source_duration: number;
  readonly audio: boolean;
}

/** Probes, decodes, renders and encodes one video. Throws ServiceError on an undecodable file. */
export async function renderVideo(engine: Engine, options: VideoRenderOptions): Promise<VideoStats & { info: VideoInfo }> {
  const { params, signal } = options;
  if (params.frame_buffer_size !== 1) {
    throw new ServiceError('bad_request', 'frame_buffer_size: a video is rendered one frame at a time (1)', { field: 'frame_buffer_size' });
  }
  const started = performance.now();
  // 1. ffmpeg and the source's properties
  const paths = options.ffmpeg ?? (await defaultFfmpeg());
  const info = await probeVideo(paths, options.input, signal);
  // the source's shape decides the size when the parameters set none (pipelines/aspect.ts)
  const shaped = { ...params, aspect: params.aspect ?? info.width / info.height };
  const stream = await StreamPipeline.create(engine, shaped, options.runners, 'img2img', options.defaults ?? BATCH_DEFAULTS);
  const size = stream.frameSize;
  const lag = stream.lag;
  // 2. the encoder, fed as frames finish
  const partial = `${options.output}.partial`;
  const encoder = startEncoder(paths, {
    output: partial,
    width: size.width,
    height: size.height,
    frameRate: info.frameRate,
    ...(info.audio ? { audioFrom: { file: options.input, codec: info.audio.codec } } : {}),
    ...(signal ? { signal } : {}),
  });
  let frames = 0;
  let skipped = 0;
  let outputs = 0;
  let written = 0;
  const stats = (): VideoStats => {
    const seconds = (performance.now() - started) / 1000;
    return {
      frames: written,
      skipped,
      skip_rate: frames > 0 ? skipped / frames : 0,
      render_fps: seconds > 0 ? written / seconds : 0,
      width: size.width,
      height: size.height,
      source_fps: info.fps,
      source_duration: info.duration,
      audio: info.audio !== undefined,
    };
  };
  const emit = async (rgb: Uint8Array) => {
    if (outputs++ < lag) return; // priming outputs: frame 0 shown early
    await encoder.write(rgb);
    written++;
    options.onProgress?.(written, Math.max(info.frames, written), stats());
  };
  try {
    // 3. every decoded frame through the stream
    let last: Uint8Array | undefined;
    for await (const rgb of decodeFrames(paths, options.input, size, params.fit, signal)) {
      signal?.throwIfAborted();
      last = rgb;
      const [result] = await stream.process([last], frames);
      frames++;
      if (result!.skipped) skipped++;
      await emit(result!.rgb);
    }
    if (!last) throw new ServiceError('bad_request', `video ${basename(options.input)} has no frames`, { field: 'video' });
    // 4. flush the frames still in flight (the filter would skip these repeats)
    if (lag > 0) {
      await stream.update({ similarity_threshold: 1 });
      for (let i = 0; i < lag; i++) await emit((await stream.process([last]))[0]!.rgb);
    }
    await encoder.finish();
    await rename(partial, options.output);
  } catch (error) {
    encoder.kill();
    await rm(partial, { force: true });
    throw error;
  }
  return { ...stats(), info };
}

/**
 * Pipeline benchmarks (in process, no server): stream batch vs sequential, RCFG kinds, the similarity filter
 * on static and moving clips, and the overhead of everything around the UNet.
 */
import { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams, type GenerationParamsInput } from '../../pipelines/params.ts';
import { denoiseSequential } from '../../pipelines/sequential.ts';
import { makeGuidance } from '../../pipelines/rcfg.ts';
import { decodeImage } from '../../pipelines/codecs/image.ts';
import type { UnetRunner } from '../../pipelines/denoise-step.ts';
import { shapeFrame } from '../helpers/stream-client.ts';
import { interleave, summarize, fmt, ms, type Summary } from './stats.ts';

export interface PipelineBenchOptions {
  readonly engine: Engine;
  readonly rounds: number;
  readonly log: (line: string) => void;
}

async function clip(size: number, moving: boolean, frames: number): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < frames; i++) {
    const x = moving ? 20 + ((i * 7) % (size - 40)) : size / 2;
    out.push((await decodeImage(await shapeFrame({ x, size }), size, size)).data);
  }
  return out;
}

/** Counts UNet calls and rows and the time spent inside them. */
function countingRunner(inner: UnetRunner, stats: { calls: number; rows: number; ms: number }): UnetRunner {
  return async (rows) => {
    const t0 = performance.now();
    const out = await inner(rows);
    stats.ms += performance.now() - t0;
    stats.calls++;
    stats.rows += rows.length;
    return out;
  };
}

export async function benchPipeline({ engine, rounds, log }: PipelineBenchOptions): Promise<Record<string, unknown>> {
  const size = engine.pack.defaultImageSize;
  const frames = await clip(size, true, 8);
  const results: Record<string, unknown> = {};
  let f = 0;
  const nextFrame = () => frames[f++ % frames.length]!;

  // 1. stream batch vs sequential, img2img and txt2img, full frame (encode + denoise + decode)
  log('\n### Stream batch vs sequential denoising (frame time, encode + denoise + decode)\n');
  log('| steps | mode | sequential | stream batch | speed-up |');
  log('| --- | --- | --- | --- | --- |');
  const streamVsSequential: Record<string, unknown>[] = [];
  for (const n of [1, 2, 4]) {
    for (const mode of ['img2img', 'txt2img'] as const) {
      const input: GenerationParamsInput = { prompt: 'a large red circle in the centre on a blue background', steps: n, strength: mode === 'txt2img' ? 1 : 0.6, guidance: 'self', similarity_threshold: 1 };
      const params = parseParams(input);
      const stream = await StreamPipeline.create(engine, params);
      const s = engine.size(params);
      const c = engine.coefficients(params, 'img2img');
      const g = makeGuidance(params.guidance, params.guidance_scale, params.delta);
      const prompt = await engine.encodePrompt(params);
      const noise = engine.noise(params, n, 1, s, false);
      const runner = engine.unetRunner(s);
      const zeros = new Float32Array(engine.latentSize(s));
      const r = await interleave(
        {
          sequential: async () => {
            const latents = mode === 'txt2img' ? [zeros] : await engine.encodeImages([nextFrame()], s);
            await engine.decodeLatents(await denoiseSequential(latents, c, g, prompt, noise, runner), s);
          },
          stream: async () => {
            if (mode === 'txt2img') await stream.generate();
            else await stream.process([nextFrame()]);
          },
        },
        rounds,
        3,
      );
      const speedup = r.sequential.median / r.stream.median;
      streamVsSequential.push({ steps: n, mode, sequential_ms: r.sequential, stream_ms: r.stream, speedup });
      log(`| ${n} | ${mode} | ${ms(r.sequential)} | ${ms(r.stream)} | ${fmt(speedup)}x |`);
    }
  }
  results['stream_vs_sequential'] = streamVsSequential;

  // 2. RCFG kinds: cost per frame in the stream batch (steps 2, img2img)
  log('\n### RCFG: frame time by guidance kind (stream batch, 2 steps, img2img)\n');
  log('| guidance | UNet rows per frame | frame time | vs full |');
  log('| --- | --- | --- | --- |');
  const kinds = ['none', 'self', 'initialize', 'full'] as const;
  const pipelines = Object.fromEntries(
    await Promise.all(kinds.map(async (k) => [k, await StreamPipeline.create(engine, parseParams({ prompt: 'a small green square at the top on a white background', steps: 2, strength: 0.6, guidance: k, guidance_scale: 1.5, similarity_threshold: 1 }))] as const)),
  ) as Record<(typeof kinds)[number], StreamPipeline>;
  const rcfg = await interleave(Object.fromEntries(kinds.map((k) => [k, async () => void (await pipelines[k].process([nextFrame()]))])) as Record<(typeof kinds)[number], () => Promise<void>>, rounds, 3);
  const rows = { none: 2, self: 2, initialize: 3, full: 4 };
  for (const k of kinds) log(`| ${k} | ${rows[k]} | ${ms(rcfg[k])} | ${fmt(rcfg.full.median / rcfg[k].median)}x faster |`);
  results['rcfg'] = Object.fromEntries(kinds.map((k) => [k, { ...rcfg[k], rows: rows[k], speedup_vs_full: rcfg.full.median / rcfg[k].median }]));

  // 3. the similarity filter on a static and a moving clip
  log('\n### Stochastic similarity filter (60-frame clips, 2 steps)\n');
  log('| clip | SSF | UNet calls | CPU s per 30 frames (1 s of video) | skipped | CPU saving |');
  log('| --- | --- | --- | --- | --- | --- |');
  const ssf: Record<string, unknown>[] = [];
  for (const moving of [false, true]) {
    const video = await clip(size, moving, 60);
    // a static camera still has sensor noise: add a little, as a webcam would
    if (!moving) video.forEach((v, i) => v.forEach((_, j) => (v[j]! += 0.01 * Math.sin(i * 131 + j * 7))));
    const perSetting: Record<string, number> = {};
    for (const on of [false, true]) {
      const stats = { calls: 0, rows: 0, ms: 0 };
      const p = parseParams({ prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, similarity_threshold: on ? 0.98 : 1 });
      const stream = await StreamPipeline.create(engine, p, (s) => countingRunner(engine.unetRunner(s), stats));
      let skipped = 0;
      const cpu0 = process.cpuUsage();
      for (const frame of video) if ((await stream.process([frame]))[0]!.skipped) skipped++;
      const cpu = process.cpuUsage(cpu0);
      const cpuPer30 = ((cpu.user + cpu.system) / 1e6) * (30 / video.length);
      perSetting[on ? 'on' : 'off'] = cpuPer30;
      ssf.push({ clip: moving ? 'moving' : 'static', ssf: on, unet_calls: stats.calls, cpu_seconds_per_30_frames: cpuPer30, skipped });
      const saving = on ? `${fmt(perSetting['off']! / cpuPer30)}x less` : '';
      log(`| ${moving ? 'moving' : 'static'} | ${on ? 'on' : 'off'} | ${stats.calls} | ${fmt(cpuPer30, 3)} | ${skipped} | ${saving} |`);
    }
  }
  results['ssf'] = ssf;

  // 4. the overhead around the UNet
  const stats = { calls: 0, rows: 0, ms: 0 };
  const p = parseParams({ prompt: 'a small yellow triangle on the left on a black background', steps: 2, strength: 0.6, similarity_threshold: 1 });
  const stream = await StreamPipeline.create(engine, p, (s) => countingRunner(engine.unetRunner(s), stats));
  await stream.process([nextFrame()]);
  stats.ms = 0;
  const times: number[] = [];
  for (let i = 0; i < rounds * 4; i++) {
    const t0 = performance.now();
    await stream.process([nextFrame()]);
    times.push(performance.now() - t0);
  }
  const frame: Summary = summarize(times);
  const unetPerFrame = stats.ms / times.length;
  const total = times.reduce((a, b) => a + b, 0) / times.length;
  log('\n### Where a frame\'s time goes (2 steps, RCFG self, in process)\n');
  log(`UNet ${fmt(unetPerFrame)} ms of ${fmt(total)} ms mean frame time: overhead (VAE encode/decode, filter, noise, conversions) ${fmt(100 * (1 - unetPerFrame / total), 1)}%. Frame time ${ms(frame)}, ${fmt(1000 / frame.median, 1)} fps.`);
  results['overhead'] = { unet_ms_per_frame: unetPerFrame, frame_ms: frame, overhead_percent: 100 * (1 - unetPerFrame / total), fps: 1000 / frame.median };
  return results;
}

/**
 * Batch benchmark: images per second for a batch of 16 in-process (txt2img) against the same batch through
 * the HTTP API (A1111 txt2img, OpenAI generations, an async job: PNG encoding, base64 and HTTP included),
 * and video render speed through ffmpeg + the stream pipeline, with the similarity filter's skip rate on a
 * moving test picture, on a still one, and with the filter off.
 *   npx tsx test/bench/batch.ts [--pack DIR] [--size 128] [--steps 2] [--count 16] [--seconds 4]
 */
import { spawnSync } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { Engine } from '../../pipelines/engine.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { parseParams } from '../../pipelines/params.ts';
import { renderVideo } from '../../pipelines/video.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { makeTestVideo, postJson, startServer, waitForJob } from '../server/batch/helpers.ts';

export interface BatchBenchOptions {
  /** Model pack (default: the embedded pack when trained, else the random-weight fixture). */
  readonly pack?: string;
  /** Image side, pixels. */
  readonly size?: number;
  readonly steps?: number;
  /** Images per batch (16). */
  readonly count?: number;
  /** Timed repetitions per measurement (the best is kept; videos run repeats - 1 times). */
  readonly repeats?: number;
  /** Length of the test videos, seconds (at 15 fps). */
  readonly videoSeconds?: number;
}

async function defaultPack(): Promise<string> {
  return access(join(EMBEDDED_PACK_DIR, 'unet', 'model.onnx')).then(
    () => EMBEDDED_PACK_DIR,
    () => BASE_PACK,
  );
}

/**
 * Best-of-n wall time of each function, seconds. Rounds interleave the functions (A B C, A B C, ...) so a
 * machine whose load drifts (it is shared) does not favour whichever ran first.
 */
async function bestOf(repeats: number, fns: Record<string, () => Promise<unknown>>): Promise<Record<string, number>> {
  const times: Record<string, number> = Object.fromEntries(Object.keys(fns).map((k) => [k, Infinity]));
  for (let i = 0; i < repeats; i++) {
    for (const [name, fn] of Object.entries(fns)) {
      const t = performance.now();
      await fn();
      times[name] = Math.min(times[name]!, (performance.now() - t) / 1000);
    }
  }
  return times;
}

export async function benchBatch(options: BatchBenchOptions = {}): Promise<Record<string, number>> {
  const pack = options.pack ?? (await defaultPack());
  const size = options.size ?? 128;
  const steps = options.steps ?? 2;
  const count = options.count ?? 16;
  const repeats = options.repeats ?? 3;
  const seconds = options.videoSeconds ?? 4;
  const lanes = 4;
  const out: Record<string, number> = { size, steps, count };

  // 1. the pipeline in process (the baseline)
  const engine = await Engine.load(pack);
  const params = parseParams({ prompt: 'a large red circle in the centre on a blue background', width: size, height: size, steps, seed: 1 });
  await txt2img(engine, params, lanes, { lanesPerCall: lanes }); // warm-up

  // 2. the same batch through the HTTP API (same lanes per UNet call), timed in rounds with the baseline
  const server = await startServer({ engine, config: { modelDir: pack } });
  try {
    const body = { prompt: params.prompt, width: size, height: size, steps, seed: 1 };
    await postJson(`${server.url}/sdapi/v1/txt2img`, { ...body, batch_size: lanes }); // warm-up
    // OpenAI allows n <= 10: two requests of count / 2, one after the other
    const half = { prompt: params.prompt, size: `${size}x${size}`, steps, seed: 1, n: count / 2 };
    const times = await bestOf(repeats, {
      inprocess: () => txt2img(engine, params, count, { lanesPerCall: lanes }),
      api_a1111: () => postJson(`${server.url}/sdapi/v1/txt2img`, { ...body, batch_size: lanes, n_iter: count / lanes }),
      api_openai: async () => {
        await postJson(`${server.url}/v1/images/generations`, half);
        await postJson(`${server.url}/v1/images/generations`, half);
      },
      api_job: async () => {
        const job = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count, lanes, ...body });
        await waitForJob(server.url, job.body.id);
      },
    });
    for (const [name, t] of Object.entries(times)) out[`${name}_images_per_s`] = count / t;
  } finally {
    await server.close();
  }
  out['api_over_inprocess'] = out['api_a1111_images_per_s']! / out['inprocess_images_per_s']!;

  // 3. video: decode -> stream pipeline -> encode, with the similarity filter on (default) and off
  if (spawnSync('ffmpeg', ['-version']).status === 0 || process.env['FFMPEG_PATH']) {
    const dir = await mkdtemp(join(tmpdir(), 'bench-video-'));
    try {
      const videos = { motion: 'testsrc2', still: 'smptebars' } as const;
      for (const [name, source] of Object.entries(videos)) {
        const file = join(dir, `${name}.mp4`);
        makeTestVideo(file, { seconds, fps: 15, size: '320x240', source });
        for (const [label, threshold] of [['', 0.98], ['_ssf_off', 1]] as const) {
          const vparams = parseParams({ ...params, strength: 0.5, similarity_threshold: threshold });
          for (let i = 0; i < Math.max(1, repeats - 1); i++) {
            const stats = await renderVideo(engine, { input: file, output: join(dir, `${name}${label}-out.mp4`), params: vparams });
            out[`video_${name}${label}_fps`] = Math.max(out[`video_${name}${label}_fps`] ?? 0, stats.render_fps);
            out[`video_${name}${label}_skip_rate`] = stats.skip_rate;
          }
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { pack: { type: 'string' }, size: { type: 'string' }, steps: { type: 'string' }, count: { type: 'string' }, seconds: { type: 'string' } },
  });
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const result = await benchBatch({
    ...(values.pack ? { pack: values.pack } : {}),
    ...(values.size ? { size: num(values.size)! } : {}),
    ...(values.steps ? { steps: num(values.steps)! } : {}),
    ...(values.count ? { count: num(values.count)! } : {}),
    ...(values.seconds ? { videoSeconds: num(values.seconds)! } : {}),
  });
  for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(32)} ${Number.isInteger(v) ? v : v.toFixed(3)}`);
}

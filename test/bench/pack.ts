/**
 * The embedded pack's own figures: quality with the evaluator (txt2img at 1, 2, 4 steps on the held-out
 * exact-grammar captions; loose phrasings and seed diversity at 4 steps; img2img re-colouring; VAE and tiny VAE
 * reconstruction PSNR) and onnxruntime CPU time per call of each model.
 */
import { readFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { img2img, txt2img } from '../../pipelines/generate.ts';
import { decodeImage, tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { accuracy, foregroundMask, loadHeldOut, loadSceneSpec, maskIoU, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { loadPack } from '../../models/pack.ts';
import { exists } from '../../models/files.ts';
import { DEFAULT_RENDER, evaluateLoose, seedDiversity } from '../../pipelines/evaluation/held-out.ts';
import { drawScenePng } from '../helpers/scenes.ts';
import { interleave, fmt, ms } from './stats.ts';

export interface PackBenchOptions {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly rounds: number;
  readonly log: (line: string) => void;
}

/** A natural photo for the VAE, when this machine has one (PHOTO=path overrides). */
const PHOTO_CANDIDATES = [process.env['PHOTO'], '/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/embedded-book/assets/f3.jpg'];

function psnr(a: Float32Array, b: Float32Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) {
    const d = (Math.max(-1, Math.min(1, a[i]!)) - Math.max(-1, Math.min(1, b[i]!))) / 2; // in [0, 1] units
    se += d * d;
  }
  return 10 * Math.log10(1 / (se / a.length));
}

export async function benchPack({ engine, quick, rounds, log }: PackBenchOptions): Promise<Record<string, unknown>> {
  const dir = engine.pack.dir;
  const spec = await loadSceneSpec(dir).catch(() => undefined);
  if (!spec) {
    log('This pack has no scenes.json: quality figures are for tiny-shapes packs only.');
    return {};
  }
  const size = engine.pack.defaultImageSize;
  const items = (await loadHeldOut(dir)).slice(0, quick ? 64 : undefined);
  const results: Record<string, unknown> = {};

  // 1. txt2img accuracy on held-out captions
  log(`### txt2img on ${items.length} held-out captions (evaluator accuracy; CFG full 2.0)\n`);
  log('| steps | background | object colour | shape | position | s/image |');
  log('| --- | --- | --- | --- | --- | --- |');
  const txt: Record<string, unknown> = {};
  for (const steps of [4, 2, 1]) {
    const t0 = performance.now();
    const scores = [];
    for (const item of items) {
      const [img] = await txt2img(engine, parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps, guidance: 'full', guidance_scale: 2 }), 1);
      scores.push(scoreImage(spec, { data: tensorToRgb8(img!.data, size, size), width: size, height: size }, item.attributes));
    }
    const acc = accuracy(scores);
    const perImage = (performance.now() - t0) / 1000 / items.length;
    txt[steps] = { ...acc, seconds_per_image: perImage };
    log(`| ${steps} | ${fmt(100 * acc.background, 1)}% | ${fmt(100 * acc.objectColor, 1)}% | ${fmt(100 * acc.shape, 1)}% | ${fmt(100 * acc.position, 1)}% | ${fmt(perImage, 3)} |`);
  }
  results['txt2img'] = txt;

  // 1b. loose phrasings (another template set than training) and seed diversity, 4 steps
  const loose = await evaluateLoose(engine, spec, DEFAULT_RENDER, quick ? 3 : 1);
  if (loose) {
    log(`\n### Loose phrasings (held-out template set; 4 steps, CFG full 2.0)\n`);
    log('| set | prompts | all right (background + every object present in its colour) | background | object present | shape | named position |');
    log('| --- | --- | --- | --- | --- | --- | --- |');
    const rows = [['one object, all sets', loose.loose], ['two objects, all sets', loose.loose2]] as [string, typeof loose.loose][];
    for (const [set, acc] of Object.entries(loose.bySet)) rows.push([`one object, set ${set}`, acc.loose], [`two objects, set ${set}`, acc.loose2]);
    for (const [name, a] of rows) {
      log(`| ${name} | ${a.images} | ${fmt(100 * a.allRight, 1)}% | ${fmt(100 * a.background, 1)}% | ${fmt(100 * a.objectPresent, 1)}% | ${fmt(100 * a.shape, 1)}% | ${a.position === null ? '-' : `${fmt(100 * a.position, 1)}%`} |`);
    }
    results['loose'] = { loose: loose.loose, loose2: loose.loose2, bySet: loose.bySet };
  }
  const diversity = await seedDiversity(engine, spec, DEFAULT_RENDER);
  if (diversity) {
    log(`\nSeed diversity (${diversity.prompts.length} prompts naming no position, ${diversity.prompts[0]?.positions.length ?? 0} seeds each): the object lands in ${fmt(diversity.meanDistinctPositions, 2)} of 5 positions on average (min ${diversity.minDistinctPositions}; ${fmt(100 * diversity.shareAtLeast3, 0)}% of prompts in >= 3); two seeds' images differ by ${fmt(diversity.meanPixelDifference, 1)}/255 per channel on average.`);
    results['diversity'] = { ...diversity, prompts: undefined };
  }

  // 2. img2img: re-colour one drawn shape by the prompt at medium strength
  const colors = Object.keys(spec.palette);
  const cases: { source: SceneAttributes; target: SceneAttributes; prompt: string }[] = [];
  for (const [i, item] of items.entries()) {
    const obj = item.attributes.objects[0]!;
    if (item.attributes.background.kind !== 'plain' || item.attributes.objects.length !== 1) continue;
    const bg = item.attributes.background.color;
    const newColor = colors.filter((c) => c !== bg && c !== obj.color)[i % (colors.length - 2)]!;
    const source: SceneAttributes = { background: item.attributes.background, objects: [{ ...obj, size: 'large' }] };
    const target: SceneAttributes = { background: item.attributes.background, objects: [{ ...obj, size: 'large', color: newColor }] };
    const where = { left: 'on the left', right: 'on the right', top: 'at the top', bottom: 'at the bottom', centre: 'in the centre' }[obj.position as 'left'];
    cases.push({ source, target, prompt: `a large ${newColor} ${obj.shape} ${where} on a ${bg} background` });
  }
  let colourOk = 0;
  let bothOk = 0;
  let iouSum = 0;
  for (const [i, c] of cases.entries()) {
    const input = await decodeImage(await drawScenePng(spec, c.source, size), size, size);
    const [out] = await img2img(engine, parseParams({ prompt: c.prompt, strength: 0.6, steps: 2, guidance: 'full', guidance_scale: 2, seed: i }), [input.data]);
    const rgb = { data: tensorToRgb8(out!.data, size, size), width: size, height: size };
    const s = scoreImage(spec, rgb, c.target);
    const iou = maskIoU(foregroundMask(rgb, c.target.background), foregroundMask({ data: tensorToRgb8(input.data, size, size), width: size, height: size }, c.source.background));
    iouSum += iou;
    if (s.objects[0]!.color) colourOk++;
    if (s.objects[0]!.color && iou >= 0.7) bothOk++;
  }
  log(`\n### img2img re-colouring (${cases.length} drawn one-shape scenes, strength 0.6, 2 steps)\n`);
  log(`New colour correct ${fmt((100 * colourOk) / cases.length, 1)}%; colour correct and shape mask IoU >= 0.7 ${fmt((100 * bothOk) / cases.length, 1)}%; mean IoU ${fmt(iouSum / cases.length, 3)}.`);
  results['img2img'] = { cases: cases.length, colour_correct: colourOk / cases.length, colour_and_iou: bothOk / cases.length, mean_iou: iouSum / cases.length };

  // 3. VAE reconstruction
  const s = engine.size({});
  let total = 0;
  const sample = items.slice(0, 64);
  for (const item of sample) {
    const img = await decodeImage(await drawScenePng(spec, item.attributes, size), size, size);
    const [rec] = await engine.decodeLatents(await engine.encodeImages([img.data], s), s);
    total += psnr(img.data, rec!);
  }
  let photo: number | undefined;
  for (const path of PHOTO_CANDIDATES) {
    if (!path || !(await access(path).then(() => true, () => false))) continue;
    const img = await decodeImage(await readFile(path), size, size);
    const [rec] = await engine.decodeLatents(await engine.encodeImages([img.data], s), s);
    photo = psnr(img.data, rec!);
    break;
  }
  log(`\n### VAE reconstruction\n\nPSNR ${fmt(total / sample.length, 2)} dB mean over ${sample.length} held-out scenes (drawn with SVG); ${photo === undefined ? 'no natural photo on this machine' : `${fmt(photo, 2)} dB on a natural photo (a circuit-board photo, centre crop at ${size}x${size})`}.`);
  results['vae'] = { scenes_psnr_db: total / sample.length, photo_psnr_db: photo ?? null };

  // 3b. the tiny VAE (taesd_encoder/ + taesd_decoder/), when the pack ships one: PSNR on the same scenes, and
  // time per call against the full VAE side by side, both on 1 intra-op thread
  if (await exists(join(dir, 'taesd_decoder', 'model.onnx'))) {
    const one = await loadPack(dir, { provider: 'cpu', threads: 1 });
    const full1 = { vaeEncoder: one.vaeEncoder, vaeDecoder: one.vaeDecoder };
    const tiny1 = { vaeEncoder: one.tinyVae!.encoder, vaeDecoder: one.tinyVae!.decoder };
    let tinyTotal = 0;
    for (const item of sample) {
      const img = await decodeImage(await drawScenePng(spec, item.attributes, size), size, size);
      const [z] = await tiny1.vaeEncoder!.encode([img.data], size, size);
      tinyTotal += psnr(img.data, (await tiny1.vaeDecoder.decode([z!], s.latentHeight, s.latentWidth)).images[0]!);
    }
    const image = (await decodeImage(await drawScenePng(spec, sample[0]!.attributes, size), size, size)).data;
    const z = new Float32Array(4 * s.latentHeight * s.latentWidth);
    const vaeCalls = await interleave(
      {
        vae_encoder: async () => void (await full1.vaeEncoder!.encode([image], size, size)),
        tiny_vae_encoder: async () => void (await tiny1.vaeEncoder!.encode([image], size, size)),
        vae_decoder: async () => void (await full1.vaeDecoder.decode([z], s.latentHeight, s.latentWidth)),
        tiny_vae_decoder: async () => void (await tiny1.vaeDecoder.decode([z], s.latentHeight, s.latentWidth)),
      },
      rounds * 3,
      3,
    );
    log(`\n### Tiny VAE (taesd_encoder + taesd_decoder, scale factor 1)\n`);
    log(`PSNR ${fmt(tinyTotal / sample.length, 2)} dB on the same ${sample.length} scenes (full VAE ${fmt(total / sample.length, 2)} dB). Time per call, 1 intra-op thread, interleaved:\n`);
    log('| model | full VAE | tiny VAE | speed-up |');
    log('| --- | --- | --- | --- |');
    for (const part of ['encoder', 'decoder'] as const) {
      const [full, small] = [vaeCalls[`vae_${part}`], vaeCalls[`tiny_vae_${part}`]];
      log(`| ${part} | ${ms(full)} | ${ms(small)} | ${fmt(full.median / small.median, 2)}x |`);
    }
    results['tiny_vae'] = { scenes_psnr_db: tinyTotal / sample.length, calls_ms_1_thread: vaeCalls };
    await one.sessions.close();
  }

  // 4. onnxruntime CPU time per call
  const pack = engine.pack;
  const prompt = await engine.encodePrompt(parseParams({ prompt: 'a red circle' }));
  const latent = engine.noise({ seed: 1 }, 1, 1, s, false).rows[0]!;
  const image = (await decodeImage(await drawScenePng(spec, items[0]!.attributes, size), size, size)).data;
  const rows = (n: number) => Array.from({ length: n }, () => ({ sample: latent, timestep: 499, context: prompt.cond }));
  const calls = await interleave(
    {
      unet_b1: async () => void (await pack.unet.predict(rows(1), s.latentHeight, s.latentWidth)),
      unet_b2: async () => void (await pack.unet.predict(rows(2), s.latentHeight, s.latentWidth)),
      unet_b4: async () => void (await pack.unet.predict(rows(4), s.latentHeight, s.latentWidth)),
      text_encoder: async () => void (await pack.textEncoder.encode([pack.tokenizer.encode('a large red circle')])),
      vae_encoder: async () => void (await engine.encodeImages([image], s)),
      vae_decoder: async () => void (await engine.decodeLatents([latent], s)),
    },
    rounds * 3,
    3,
  );
  log(`\n### onnxruntime-node CPU time per call (${size}x${size} images, ${s.latentWidth}x${s.latentHeight} latents)\n`);
  log('| model | time per call |');
  log('| --- | --- |');
  for (const [name, summary] of Object.entries(calls)) log(`| ${name.replace('_b', ' batch ')} | ${ms(summary)} |`);
  results['calls_ms'] = calls;
  return results;
}

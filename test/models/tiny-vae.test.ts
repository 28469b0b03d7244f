/**
 * The embedded pack's tiny VAE (taesd_encoder/ + taesd_decoder/): it loads when asked, round-trips held-out scenes
 * within 2 dB of the full VAE, and works on the same scaled latents as the full VAE and the UNet (scale factor 1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadHeldOut, loadSceneSpec } from '../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR, loadPack, type Vae } from '../../models/pack.ts';
import { rgb8ToTensor } from '../../pipelines/codecs/image.ts';
import { drawScene } from '../helpers/scenes.ts';

const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
const pack = await loadPack(EMBEDDED_PACK_DIR, { provider: 'cpu', threads: 1 });
const full: Vae = { encoder: pack.vaeEncoder, decoder: pack.vaeDecoder };
const tiny: Vae | undefined = pack.tinyVae;
const scenes = await Promise.all((await loadHeldOut(EMBEDDED_PACK_DIR)).slice(0, 16).map(async (item) => {
  const img = await drawScene(spec, item.attributes);
  return rgb8ToTensor(img.data, img.width, img.height);
}));

/** PSNR of two [3, H, W] images in [-1, 1], clamped, on the 0-255 scale. */
function psnr(a: Float32Array, b: Float32Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) {
    const d = (Math.max(-1, Math.min(1, a[i]!)) - Math.max(-1, Math.min(1, b[i]!))) * 127.5;
    se += d * d;
  }
  return 10 * Math.log10((255 * 255) / (se / a.length));
}

async function roundTrip(encodeWith: Vae | undefined, decodeWith: Vae | undefined, img: Float32Array): Promise<Float32Array> {
  const [z] = await encodeWith!.encoder!.encode([img], 128, 128);
  return (await decodeWith!.decoder.decode([z!], 16, 16)).images[0]!;
}

test('the pack loads taesd_encoder and taesd_decoder as its tiny VAE with scale factor 1, beside the full VAE', () => {
  assert.ok(tiny, 'the embedded pack ships a tiny VAE');
  assert.match(tiny.encoder!.model.label, /taesd_encoder/);
  assert.match(tiny.decoder.model.label, /taesd_decoder/);
  assert.deepEqual([tiny.encoder!.scalingFactor, tiny.decoder.scalingFactor], [1, 1]);
  assert.match(full.decoder.model.label, /^vae_decoder/);
  assert.notEqual(full.decoder.scalingFactor, 1);
});

test('the tiny VAE round-trips held-out scenes within 2 dB of the full VAE', async () => {
  let tinySum = 0;
  let fullSum = 0;
  for (const img of scenes) {
    const t = psnr(img, await roundTrip(tiny, tiny, img));
    tinySum += t;
    fullSum += psnr(img, await roundTrip(full, full, img));
    assert.ok(t > 22, `a scene came back at ${t.toFixed(2)} dB`);
  }
  const [t, f] = [tinySum / scenes.length, fullSum / scenes.length];
  assert.ok(t >= f - 2, `tiny ${t.toFixed(2)} dB, full ${f.toFixed(2)} dB`);
});

test('tiny and full VAE share the UNet latent space: each decodes what the other encodes', async () => {
  for (const img of scenes.slice(0, 6)) {
    assert.ok(psnr(img, await roundTrip(full, tiny, img)) > 24, 'full encoder -> tiny decoder');
    assert.ok(psnr(img, await roundTrip(tiny, full, img)) > 24, 'tiny encoder -> full decoder');
  }
});

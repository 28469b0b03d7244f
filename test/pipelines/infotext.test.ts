/** A1111's infotext (pipelines/infotext.ts): what a render writes reads back to the same parameters; A1111's own texts read too. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServiceError } from '../../models/errors.ts';
import { Engine } from '../../pipelines/engine.ts';
import { parseInfotext, writeInfotext } from '../../pipelines/infotext.ts';
import { parseParams } from '../../pipelines/params.ts';
import { planRequest } from '../../pipelines/plan.ts';
import { BASE_PACK, linkPackWithTinyVae } from '../helpers/fixtures.ts';

const engine = await Engine.load(BASE_PACK);
const image = (index: number, variant: { expert: string; relativeMacs: number; adapters: { name: string; weight: number }[] }) => ({ index, width: 96, height: 64, variant: { key: 'k', unet: engine.pack.unet, ...variant } });

test('a render\'s infotext: A1111\'s keys, our extras, the guidance used, and image j\'s own seeds', async () => {
  const params = parseParams({
    prompt: [{ text: 'a red circle', weight: 0.7 }, { text: 'a blue square', weight: 0.3 }],
    prompt_blend: 'slerp',
    negative_prompt: 'green, noisy',
    seed: [{ seed: 10, weight: 1 }, { seed: 20, weight: 0.5 }],
    t_index_list: [10, 30],
    guidance: 'self',
    guidance_scale: 5,
    delta: 0.7,
    width: 96,
    height: 64,
    budget: 0.6,
  });
  const plan = await planRequest(engine, params, 'txt2img');
  const text = writeInfotext(plan, image(2, { expert: 'e60', relativeMacs: 0.6, adapters: [{ name: 'heart', weight: 0.8 }] }), 'tiny');
  assert.equal(
    text,
    'a red circle :0.7 AND a blue square :0.3 <lora:heart:0.8>\nNegative prompt: green, noisy\n' +
      'Steps: 2, Sampler: LCM, CFG scale: 2, Seed: 12, Size: 96x64, Model: tiny, Guidance: full, Prompt blend: slerp, ' +
      'Seed blend: "12:1, 22:0.5", T index list: "[10,30]", Budget: 0.6, Expert: e60',
  );
  const back = parseInfotext(text);
  assert.deepEqual(back.params, {
    prompt: [{ text: 'a red circle', weight: 0.7 }, { text: 'a blue square', weight: 0.3 }],
    adapters: [{ name: 'heart', weight: 0.8 }],
    negative_prompt: 'green, noisy',
    steps: 2,
    guidance: 'full',
    guidance_scale: 2,
    seed: [{ seed: 12, weight: 1 }, { seed: 22, weight: 0.5 }],
    width: 96,
    height: 64,
    prompt_blend: 'slerp',
    t_index_list: [10, 30],
    budget: 0.6,
    expert: 'e60',
  });
  assert.equal(back.mode, 'txt2img');
  assert.deepEqual(back.notes, []);
});

test('img2img, RCFG delta and the strict flags are written and read back', async () => {
  const params = parseParams({ prompt: 'x', strength: 0.6, guidance: 'initialize', guidance_scale: 7, delta: 0.5, strict_guidance: true, strict_size: true, seed: 3 });
  const plan = await planRequest(engine, params, 'img2img');
  const text = writeInfotext(plan, image(0, { expert: 'full', relativeMacs: 1, adapters: [] }), 'tiny');
  assert.match(text, /^x\nSteps: 2, Sampler: LCM, CFG scale: 7, Seed: 3, Size: 96x64, Model: tiny, Denoising strength: 0.6, Guidance: initialize, RCFG delta: 0.5, Strict guidance: true, Strict size: true$/);
  const back = parseInfotext(text);
  assert.equal(back.mode, 'img2img');
  assert.deepEqual(back.params, { prompt: 'x', steps: 2, guidance: 'initialize', guidance_scale: 7, seed: 3, width: 96, height: 64, strength: 0.6, delta: 0.5, strict_guidance: true, strict_size: true });
  const none = writeInfotext(await planRequest(engine, parseParams({ prompt: 'y', guidance: 'none', seed: 1 }), 'txt2img'), image(0, { expert: 'full', relativeMacs: 1, adapters: [] }), 'tiny');
  assert.match(none, /CFG scale: 1, .*Guidance: none$/);
  assert.deepEqual(parseInfotext(none).params.guidance, 'none');
});

test('an aspect asked for and fit pad are written and read back; the default crop is left out', async () => {
  const variant = { expert: 'full', relativeMacs: 1, adapters: [] };
  const text = writeInfotext(await planRequest(engine, parseParams({ prompt: 'x', seed: 1, aspect: 1.5, fit: 'pad' }), 'img2img'), image(0, variant), 'm');
  assert.match(text, /, Aspect: 1.5, Fit: pad$/);
  assert.deepEqual([parseInfotext(text).params.aspect, parseInfotext(text).params.fit], [1.5, 'pad']);
  assert.doesNotMatch(writeInfotext(await planRequest(engine, parseParams({ prompt: 'x', seed: 1 }), 'img2img'), image(0, variant), 'm'), /Aspect|Fit/);
});

test('the VAE is written when the tiny one decoded or one was named, and read back; A1111\'s VAE files are noted', async () => {
  const withTiny = await Engine.load(await linkPackWithTinyVae(BASE_PACK));
  const variant = { expert: 'full', relativeMacs: 1, adapters: [] };
  const text = async (vae: 'full' | 'tiny' | undefined, e = withTiny) =>
    writeInfotext(await planRequest(e, parseParams({ prompt: 'x', seed: 1, ...(vae ? { vae } : {}) }), 'txt2img', undefined, { vae: 'tiny' }), image(0, variant), 'm');
  assert.match(await text(undefined), /, VAE: tiny$/, 'the default chose the tiny VAE');
  assert.match(await text('full'), /, VAE: full$/, 'asked for by name');
  assert.doesNotMatch(await text(undefined, engine), /VAE/, 'a pack without one: the full VAE by default, nothing to say');
  assert.equal(parseInfotext(await text('tiny')).params.vae, 'tiny');
  assert.equal(parseInfotext(await text('full')).params.vae, 'full');
  const a1111 = parseInfotext('p\nSteps: 4, Sampler: LCM, Seed: 1, VAE: vae-ft-mse-840000-ema-pruned.safetensors');
  assert.equal(a1111.params.vae, undefined);
  assert.match(a1111.notes.join(), /VAE "vae-ft-mse-840000-ema-pruned.safetensors" is not available/);
});

test('an AUTOMATIC1111 infotext reads as A1111 reads it, and maps onto this service\'s parameters', () => {
  const text = [
    'masterpiece, a cat, <lora:detail:0.6>',
    'sitting on a mat',
    'Negative prompt: blurry, lowres',
    'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, ' +
      'Model: v1-5-pruned-emaonly, Variation seed: 99, Variation seed strength: 0.3, Lora hashes: "detail: 1a2b3c", Version: v1.10.1',
  ].join('\n');
  const parsed = parseInfotext(text);
  assert.equal(parsed.fields['Prompt'], 'masterpiece, a cat, <lora:detail:0.6>\nsitting on a mat');
  assert.equal(parsed.fields['Lora hashes'], 'detail: 1a2b3c', 'quoted values are unquoted');
  assert.deepEqual([parsed.fields['Size-1'], parsed.fields['Size-2']], ['512', '768']);
  assert.deepEqual(parsed.params, {
    prompt: 'masterpiece, a cat,\nsitting on a mat',
    adapters: [{ name: 'detail', weight: 0.6 }],
    negative_prompt: 'blurry, lowres',
    steps: 8,
    guidance: 'full',
    guidance_scale: 7,
    seed: [{ seed: 1234, weight: 0.7 }, { seed: 99, weight: 0.3 }],
    width: 512,
    height: 768,
  });
  assert.match(parsed.notes.join('\n'), /Steps 20 clamped to 8/);
  assert.match(parsed.notes.join('\n'), /sampler "DPM\+\+ 2M" is not available/);
  // a text with no parameter line is all prompt
  assert.deepEqual(parseInfotext('just a prompt, nothing else').params, { prompt: 'just a prompt, nothing else' });
});

test('a malformed value is a bad_request naming its key', () => {
  const bad = (line: string, key: string) =>
    assert.throws(() => parseInfotext(`p\nSteps: 4, Sampler: LCM, Seed: 1, ${line}`), (e: unknown) => e instanceof ServiceError && e.code === 'bad_request' && e.field === key && e.message.includes(key));
  bad('CFG scale: lots', 'CFG scale');
  bad('Guidance: maximal', 'Guidance');
  bad('Seed blend: "1-2"', 'Seed blend');
  bad('T index list: "[10,"', 'T index list');
  bad('T index list: "[10, 99]"', 't_index_list');
  assert.match(parseInfotext('p\nSteps: 4, Sampler: LCM, Size: 500x500').notes.join(), /500x500 is not a multiple of 8/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServiceError } from '../../models/errors.ts';
import { loraTags, parsePrompt, variationSeeds, writePrompt } from '../../pipelines/prompt-syntax.ts';

test('<lora:name:weight> tags choose adapters and leave the prompt', () => {
  assert.deepEqual(loraTags('a large <lora:heart:0.8> red heart <LORA:ring> <lora:x_1:1.5:0.5>'), {
    prompt: 'a large red heart',
    adapters: [{ name: 'heart', weight: 0.8 }, { name: 'ring', weight: 1 }, { name: 'x_1', weight: 1.5 }],
  });
  assert.deepEqual(loraTags('no tags here'), { prompt: 'no tags here', adapters: [] });
  assert.deepEqual(loraTags('two\nlines <lora:a:1>'), { prompt: 'two\nlines', adapters: [{ name: 'a', weight: 1 }] }, 'line breaks stay');
  assert.throws(() => loraTags('<lora:heart:abc>'), (e: unknown) => e instanceof ServiceError && e.code === 'bad_request' && /no numeric weight/.test(e.message));
});

test('AND makes a weighted blend (A1111 composable diffusion syntax), only where blends are asked for', () => {
  assert.deepEqual(parsePrompt('a red circle :0.7 AND a blue square:0.3 <lora:heart:1>', { blends: true }), {
    prompt: [{ text: 'a red circle', weight: 0.7 }, { text: 'a blue square', weight: 0.3 }],
    adapters: [{ name: 'heart', weight: 1 }],
  });
  assert.deepEqual(parsePrompt('cats AND dogs', { blends: true }).prompt, [{ text: 'cats', weight: 1 }, { text: 'dogs', weight: 1 }]);
  assert.equal(parsePrompt('cats AND dogs', { blends: false }).prompt, 'cats AND dogs');
  assert.equal(parsePrompt('sand and android', { blends: true }).prompt, 'sand and android', 'AND as a word, upper case');
});

test('writePrompt is what parsePrompt reads back', () => {
  const blend = [{ text: 'a red circle', weight: 0.7 }, { text: 'a blue square', weight: 0.3 }];
  const text = writePrompt(blend, [{ name: 'heart', weight: 0.5 }]);
  assert.equal(text, 'a red circle :0.7 AND a blue square :0.3 <lora:heart:0.5>');
  assert.deepEqual(parsePrompt(text, { blends: true }), { prompt: blend, adapters: [{ name: 'heart', weight: 0.5 }] });
  assert.equal(writePrompt('', []), '');
});

test('variation seeds become a seed blend', () => {
  assert.equal(variationSeeds(4, 9, 0), 4);
  assert.deepEqual(variationSeeds(4, 9, 0.25), [{ seed: 4, weight: 0.75 }, { seed: 9, weight: 0.25 }]);
});

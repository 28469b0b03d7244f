import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseGuidance } from '../../pipelines/guidance-choice.ts';
import { parseParams } from '../../pipelines/params.ts';

const RANGE = [1, 2] as const;
const choose = (input: Record<string, unknown>, flow: 'render' | 'stream' = 'render') => chooseGuidance(parseParams(input), RANGE, flow);

test('a scale within the range is used as it is, silently', () => {
  assert.deepEqual(choose({ guidance: 'full', guidance_scale: 1.5 }), { kind: 'full', scale: 1.5, notes: [] });
  assert.deepEqual(choose({}), { kind: 'self', scale: 1.2, notes: [] }, 'the defaults need nothing');
});

test('a scale outside the range is clamped into it, and said; strict_guidance keeps it', () => {
  const high = choose({ guidance: 'full', guidance_scale: 7 });
  assert.deepEqual([high.kind, high.scale], ['full', 2]);
  assert.match(high.notes.join(), /guidance scale 7 is outside this model's recommended range 1-2: 2 is used \(strict_guidance: true keeps 7\)/);
  assert.equal(choose({ guidance: 'self', guidance_scale: 0.5 }).scale, 1, 'below: raised to the minimum');
  assert.deepEqual(choose({ guidance: 'full', guidance_scale: 7, strict_guidance: true }), { kind: 'full', scale: 7, notes: [] });
  assert.deepEqual(choose({ guidance: 'none', guidance_scale: 8 }), { kind: 'none', scale: 8, notes: [] }, 'guidance none has no scale to clamp');
});

test('a negative prompt moves self to full for renders and to initialize for streams; strict keeps self and says it has no effect', () => {
  const render = choose({ negative_prompt: 'a red circle' });
  assert.equal(render.kind, 'full');
  assert.match(render.notes.join(), /negative prompt given: guidance self ignores it, so full guidance is used/);
  assert.equal(choose({ negative_prompt: 'a red circle' }, 'stream').kind, 'initialize');
  const strict = choose({ negative_prompt: 'a red circle', strict_guidance: true });
  assert.equal(strict.kind, 'self');
  assert.match(strict.notes.join(), /the negative prompt has no effect with guidance self/);
  assert.deepEqual(choose({ negative_prompt: '   ' }).notes, [], 'blank is no negative prompt');
  assert.match(choose({ negative_prompt: 'x', guidance: 'full', guidance_scale: 1 }).notes.join(), /no effect with guidance full at scale 1/);
  assert.equal(choose({ negative_prompt: 'x', guidance: 'initialize' }, 'render').kind, 'initialize', 'kinds that read it stay');
});

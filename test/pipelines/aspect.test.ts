import { test } from 'node:test';
import assert from 'node:assert/strict';
import { otherSide, sizeForAspect } from '../../pipelines/aspect.ts';

const TINY = { pixels: 128 * 128, multiple: 32, maxSide: 1024 };
const SD = { pixels: 512 * 512, multiple: 8, maxSide: 1024 };

test('tiny-shapes (128 x 128 pixels, multiples of 32): the sizes the docs list', () => {
  const cases: [number, [number, number]][] = [
    [16 / 9, [160, 96]],
    [4 / 3, [128, 96]],
    [1, [128, 128]],
    [9 / 16, [96, 160]],
    [3 / 4, [96, 128]],
    [1.7778, [160, 96]], // a rounded 16:9 is 16:9
  ];
  for (const [aspect, size] of cases) {
    const { width, height } = sizeForAspect(aspect, TINY);
    assert.deepEqual([width, height], size, `aspect ${aspect}`);
  }
});

test('a finer grid (SD, multiples of 8): the largest size within 0.5 % of the aspect', () => {
  assert.deepEqual(sizeForAspect(16 / 9, SD), { width: 680, height: 384 }); // 1.771: 0.4 % off, 13 % more pixels than 640 x 360
  assert.deepEqual(sizeForAspect(4 / 3, SD), { width: 584, height: 440 });
  assert.deepEqual(sizeForAspect(1, SD), { width: 512, height: 512 });
});

test('every choice is on the grid, within the budget, and covers at least half of it', () => {
  for (let aspect = 0.25; aspect <= 4; aspect *= 1.07) {
    for (const rule of [TINY, SD]) {
      const { width, height } = sizeForAspect(aspect, rule);
      assert.equal(width % rule.multiple, 0);
      assert.equal(height % rule.multiple, 0);
      assert.ok(width * height <= rule.pixels, `${width}x${height} over the budget for ${aspect}`);
      assert.ok(width * height >= rule.pixels / 2, `${width}x${height} under half the budget for ${aspect}`);
      // no other size on the grid within the budget has a closer aspect by more than the tolerance
      const error = Math.abs(Math.log(width / height / aspect));
      for (let h = rule.multiple; h <= rule.maxSide; h += rule.multiple) {
        for (let w = rule.multiple; w * h <= rule.pixels && w <= rule.maxSide; w += rule.multiple) {
          if (w * h < rule.pixels / 2) continue;
          assert.ok(Math.abs(Math.log(w / h / aspect)) >= error - 0.005, `${w}x${h} is closer to ${aspect} than ${width}x${height}`);
        }
      }
    }
  }
});

test('one side given: the other follows the aspect on the grid', () => {
  assert.equal(otherSide(160, 16 / 9, 32, 1024, 'width'), 96);
  assert.equal(otherSide(96, 16 / 9, 32, 1024, 'height'), 160);
  assert.throws(() => sizeForAspect(0, TINY), RangeError);
});

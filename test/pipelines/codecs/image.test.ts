/** Image bytes <-> tensors (pipelines/codecs/image.ts): exact conversions, a round trip, and clear errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { decodeImage, encodeImage, rgb8ToTensor, tensorToRgb8 } from '../../../pipelines/codecs/image.ts';
import { ServiceError } from '../../../models/errors.ts';

test('RGB bytes <-> [3, H, W] in [-1, 1]: planes, scale and rounding', () => {
  const rgb = Uint8Array.of(0, 128, 255, 10, 20, 30); // 2 pixels
  const t = rgb8ToTensor(rgb, 2, 1);
  assert.deepEqual([...t], [-1, 10 / 127.5 - 1, 128 / 127.5 - 1, 20 / 127.5 - 1, 1, 30 / 127.5 - 1].map(Math.fround));
  assert.deepEqual([...tensorToRgb8(t, 2, 1)], [...rgb]);
  assert.deepEqual([...tensorToRgb8(Float32Array.of(-2, 2, 0), 1, 1)], [0, 255, 128], 'clamped and rounded');
});

test('a PNG round trip is exact; decoding resizes to the asked size', async () => {
  const rgb = Buffer.from(Array.from({ length: 32 * 16 * 3 }, (_, i) => (i * 7) % 256));
  const t = rgb8ToTensor(rgb, 32, 16);
  const png = await encodeImage(t, 32, 16, 'png');
  const back = await decodeImage(png, 32, 16);
  assert.deepEqual([...tensorToRgb8(back.data, 32, 16)], [...rgb]);
  const half = await decodeImage(png, 16, 8);
  assert.equal(half.data.length, 3 * 16 * 8);
  assert.equal((await sharp(await encodeImage(t, 32, 16, 'jpeg')).metadata()).format, 'jpeg');
});

test('an unreadable image is a bad_image error; an empty one too', async () => {
  await assert.rejects(decodeImage(Buffer.from('not an image at all'), 128, 128), (e: ServiceError) => e.code === 'bad_image');
  await assert.rejects(decodeImage(Buffer.alloc(0), 128, 128), /0 bytes/);
});


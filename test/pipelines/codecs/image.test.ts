/** Image bytes <-> tensors (pipelines/codecs/image.ts): exact conversions, a round trip, and clear errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { decodeImage, decodeRgb8, encodeImage, rgb8ToTensor, tensorToRgb8 } from '../../../pipelines/codecs/image.ts';
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


test('frames already at the size skip the resize but still get EXIF rotation, RGB from grey and no alpha', async () => {
  // left half red, right half blue; EXIF orientation 6 (rotate 90 clockwise): red on top, blue below
  const halves = Buffer.alloc(64 * 64 * 3);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) halves.set(x < 32 ? [255, 0, 0] : [0, 0, 255], (y * 64 + x) * 3);
  const rotated = await sharp(halves, { raw: { width: 64, height: 64, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
  const { rgb } = await decodeRgb8(rotated, 64, 64);
  const at = (x: number, y: number) => [...rgb.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];
  assert.ok(at(32, 8)[0]! > 200 && at(32, 8)[2]! < 60, `top is red: ${at(32, 8)}`);
  assert.ok(at(32, 56)[2]! > 200 && at(32, 56)[0]! < 60, `bottom is blue: ${at(32, 56)}`);
  const grey = await sharp(Buffer.alloc(64 * 64, 90), { raw: { width: 64, height: 64, channels: 1 } }).jpeg().toBuffer();
  const fromGrey = (await decodeRgb8(grey, 64, 64)).rgb;
  assert.equal(fromGrey.length, 64 * 64 * 3);
  assert.ok(Math.abs(fromGrey[0]! - 90) <= 2 && fromGrey[0] === fromGrey[1] && fromGrey[1] === fromGrey[2]);
  const withAlpha = await sharp({ create: { width: 64, height: 64, channels: 4, background: { r: 10, g: 200, b: 30, alpha: 1 } } }).png().toBuffer();
  assert.deepEqual([...(await decodeRgb8(withAlpha, 64, 64)).rgb.subarray(0, 3)], [10, 200, 30]);
  // and the float path is the byte path, scaled
  assert.deepEqual((await decodeImage(rotated, 64, 64)).data, rgb8ToTensor(rgb, 64, 64));
});

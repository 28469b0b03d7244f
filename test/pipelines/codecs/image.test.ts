/** Image bytes <-> tensors (pipelines/codecs/image.ts): exact conversions, a round trip, and clear errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { decodeImage, decodeRgb8, encodeImage, readImageText, resizeImage, rgb8ToTensor, tensorToRgb8 } from '../../../pipelines/codecs/image.ts';
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


const TEXT = 'a red circle <lora:heart:0.5>\nNegative prompt: blurry\nSteps: 4, Sampler: LCM, CFG scale: 2, Seed: 7, Size: 16x8';
const tensor = rgb8ToTensor(Buffer.from(Array.from({ length: 16 * 8 * 3 }, (_, i) => (i * 5) % 256)), 16, 8);

test('every format carries the parameters text and reads it back: PNG text chunk, XMP and EXIF for JPEG and WebP', async () => {
  for (const format of ['png', 'jpeg', 'webp'] as const) {
    const plain = await encodeImage(tensor, 16, 8, format);
    assert.equal(await readImageText(plain), undefined, `${format}: none unless given`);
    const bytes = await encodeImage(tensor, 16, 8, format, 85, TEXT);
    assert.equal(await readImageText(bytes), TEXT, format);
    assert.ok((await sharp(bytes).raw().toBuffer()).equals(await sharp(plain).raw().toBuffer()), `${format}: the same pixels`);
    const unicode = `${TEXT} 日本 ü`;
    assert.equal(await readImageText(await encodeImage(tensor, 16, 8, format, 85, unicode)), unicode, `${format}: any text, exactly`);
  }
  const meta = await sharp(await encodeImage(tensor, 16, 8, 'jpeg', 85, TEXT)).metadata();
  assert.ok(meta.exif && meta.xmp, 'JPEG: both EXIF and XMP');
  assert.equal((await sharp(await encodeImage(tensor, 16, 8, 'jpeg', 85, 'ü')).metadata()).exif, undefined, 'non-ASCII text: XMP only (libvips writes EXIF text as ASCII)');
});

/** A JPEG whose only metadata is an EXIF UserComment with these 8 code bytes and this payload (as other tools write). */
function jpegWithUserComment(jpeg: Buffer, code: string, payload: Buffer): Buffer {
  const comment = Buffer.concat([Buffer.from(code, 'latin1'), payload]);
  // TIFF, big-endian: IFD0 at 8 with one entry (ExifIFD pointer) -> Exif IFD at 26 with one entry (UserComment) -> data at 44
  const tiff = Buffer.alloc(44 + comment.length);
  tiff.write('MM\0*', 0, 'latin1');
  tiff.writeUInt32BE(8, 4);
  tiff.writeUInt16BE(1, 8);
  tiff.writeUInt16BE(0x8769, 10);
  tiff.writeUInt16BE(4, 12);
  tiff.writeUInt32BE(1, 14);
  tiff.writeUInt32BE(26, 18);
  tiff.writeUInt32BE(0, 22);
  tiff.writeUInt16BE(1, 26);
  tiff.writeUInt16BE(0x9286, 28);
  tiff.writeUInt16BE(7, 30);
  tiff.writeUInt32BE(comment.length, 32);
  tiff.writeUInt32BE(44, 36);
  tiff.writeUInt32BE(0, 40);
  comment.copy(tiff, 44);
  const body = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const app1 = Buffer.alloc(4);
  app1.writeUInt16BE(0xffe1, 0);
  app1.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), app1, body, jpeg.subarray(2)]);
}

test('EXIF UserComment as AUTOMATIC1111 (UNICODE, big-endian) and other tools (little-endian, ASCII) write it', async () => {
  const jpeg = await encodeImage(tensor, 16, 8, 'jpeg');
  const text = 'a cat 日本\nSteps: 20, Sampler: Euler a';
  assert.equal(await readImageText(jpegWithUserComment(jpeg, 'UNICODE\0', Buffer.from(text, 'utf16le').swap16())), text, 'UCS-2 big-endian');
  assert.equal(await readImageText(jpegWithUserComment(jpeg, 'UNICODE\0', Buffer.from(text, 'utf16le'))), text, 'UCS-2 little-endian');
  assert.equal(await readImageText(jpegWithUserComment(jpeg, 'ASCII\0\0\0', Buffer.from('plain, ascii\0', 'latin1'))), 'plain, ascii');
});

test('resizeImage resizes an image as its 8-bit pixels', async () => {
  const big = await resizeImage(tensor, { width: 16, height: 8 }, 32, 16);
  assert.equal(big.length, 3 * 32 * 16);
  const expected = await sharp(tensorToRgb8(tensor, 16, 8), { raw: { width: 16, height: 8, channels: 3 } }).resize(32, 16, { fit: 'fill', kernel: 'lanczos3' }).raw().toBuffer();
  assert.ok(tensorToRgb8(big, 32, 16).equals(expected));
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

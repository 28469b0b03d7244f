/** PNG text chunks (pipelines/codecs/png-text.ts): written chunks are valid PNG (libvips decodes them) and read back exactly. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { isPng, readPngText, withPngText } from '../../../pipelines/codecs/png-text.ts';

const png = await sharp({ create: { width: 4, height: 3, channels: 3, background: { r: 10, g: 20, b: 30 } } }).png().toBuffer();

test('Latin-1 text goes in a tEXt chunk, anything else in an iTXt chunk; both read back exactly', async () => {
  const latin = 'a red circle, café\nSteps: 4, Seed: 7';
  const other = 'a red circle 日本 — ✓';
  const once = withPngText(png, 'parameters', latin);
  assert.ok(once.includes(Buffer.from('tEXtparameters\0', 'latin1')));
  const twice = withPngText(once, 'other', other);
  assert.ok(twice.includes(Buffer.from('iTXtother\0', 'latin1')));
  assert.deepEqual([...readPngText(twice)], [['other', other], ['parameters', latin]]);
  // libvips checks every chunk's CRC: the image still decodes to the same pixels
  assert.ok((await sharp(twice).raw().toBuffer()).equals(await sharp(png).raw().toBuffer()));
  assert.equal((await sharp(twice).metadata()).comments?.find((c) => c.keyword === 'other')?.text, other);
});

test('compressed chunks (zTXt, compressed iTXt) read too; other files have no PNG text', () => {
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length);
    head.write(type, 4, 'latin1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
    return Buffer.concat([head, data, crc]);
  };
  const z = chunk('zTXt', Buffer.concat([Buffer.from('parameters\0\0', 'latin1'), deflateSync(Buffer.from('zipped ü', 'latin1'))]));
  const i = chunk('iTXt', Buffer.concat([Buffer.from('other\0\x01\0en\0\0', 'latin1'), deflateSync(Buffer.from('ß 日本', 'utf8'))]));
  const file = Buffer.concat([png.subarray(0, 33), z, i, png.subarray(33)]);
  assert.deepEqual(Object.fromEntries(readPngText(file)), { parameters: 'zipped ü', other: 'ß 日本' });
  assert.equal(isPng(Buffer.from('not a png at all, not even close')), false);
  assert.equal(readPngText(Buffer.from([0xff, 0xd8, 0xff])).size, 0);
  assert.throws(() => withPngText(Buffer.from('nope'), 'k', 'v'), /not a PNG/);
});

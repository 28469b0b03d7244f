/**
 * PNG text chunks (PNG spec §11.3.4): write a keyword/text pair after IHDR, read every tEXt, zTXt and iTXt back.
 * Hand-written: sharp (libvips) reads PNG text but cannot write arbitrary keywords, and the npm packages that do
 * (png-chunks-extract/-encode, png-chunk-text) have been unmaintained since 2016; a chunk is length, type, data
 * and a CRC-32 (node:zlib has it).
 */
import { crc32, inflateSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 CRC): text goes right after it. */
const AFTER_IHDR = 8 + 25;

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= AFTER_IHDR && Buffer.from(bytes.buffer, bytes.byteOffset, 8).equals(SIGNATURE);
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A copy of `png` with a text chunk: tEXt when the text is Latin-1 (what AUTOMATIC1111 and PIL write), else an
 * uncompressed iTXt in UTF-8 (PIL writes the same for other text).
 */
export function withPngText(png: Buffer, keyword: string, text: string): Buffer {
  if (!isPng(png)) throw new Error('not a PNG');
  const latin1 = [...text].every((c) => c.codePointAt(0)! <= 0xff);
  const data = latin1
    ? Buffer.concat([Buffer.from(`${keyword}\0`, 'latin1'), Buffer.from(text, 'latin1')])
    : // keyword \0, compression flag 0, method 0, empty language tag \0, empty translated keyword \0, text
      Buffer.concat([Buffer.from(`${keyword}\0\0\0\0\0`, 'latin1'), Buffer.from(text, 'utf8')]);
  return Buffer.concat([png.subarray(0, AFTER_IHDR), chunk(latin1 ? 'tEXt' : 'iTXt', data), png.subarray(AFTER_IHDR)]);
}

/** Every text chunk of a PNG, keyword -> text (the first of a keyword wins). Broken chunks are skipped. */
export function readPngText(png: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  if (!isPng(png)) return out;
  const bytes = Buffer.from(png.buffer, png.byteOffset, png.length);
  for (let at = 8; at + 12 <= bytes.length; ) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.toString('latin1', at + 4, at + 8);
    const data = bytes.subarray(at + 8, Math.min(bytes.length, at + 8 + length));
    at += 12 + length;
    if (type === 'IEND') break;
    try {
      const entry = textOf(type, data);
      if (entry && !out.has(entry[0])) out.set(entry[0], entry[1]);
    } catch {
      // a chunk that does not inflate or is cut short: not ours to repair
    }
  }
  return out;
}

function textOf(type: string, data: Buffer): [string, string] | undefined {
  const nul = data.indexOf(0);
  if (nul <= 0) return undefined;
  const keyword = data.toString('latin1', 0, nul);
  switch (type) {
    case 'tEXt':
      return [keyword, data.toString('latin1', nul + 1)];
    case 'zTXt': // compression method byte, then zlib data
      return [keyword, inflateSync(data.subarray(nul + 2)).toString('latin1')];
    case 'iTXt': {
      const compressed = data[nul + 1] === 1;
      const language = data.indexOf(0, nul + 3);
      const translated = data.indexOf(0, language + 1);
      if (language < 0 || translated < 0) return undefined;
      const body = data.subarray(translated + 1);
      return [keyword, (compressed ? inflateSync(body) : body).toString('utf8')];
    }
    default:
      return undefined;
  }
}

/**
 * Image bytes <-> model tensors, through sharp. Frames in: JPEG, PNG or WebP, checked before decoding
 * (format, pixel limit against decompression bombs), resized to the target size (`fit`: centre crop, or the whole
 * picture with black bars), as RGB bytes [H, W, 3] or [3, H, W] floats in [-1, 1]. Frames out: RGB bytes or
 * [3, H, W] in [-1, 1] -> JPEG, PNG or WebP, optionally carrying a text (the generation parameters) where each
 * format keeps one: a PNG `parameters` text chunk as AUTOMATIC1111 writes; for JPEG and WebP, XMP
 * (exif:UserComment, any text) and EXIF UserComment (libvips writes it as ASCII only, so only ASCII text goes
 * there). The lean path: a frame that already has the target size, no EXIF rotation and plain RGB is decoded in one
 * step with nothing else done to it (a live client sends frames at the stream's size).
 */
import { decodeXML, encodeXML } from 'entities';
import exifReader from 'exif-reader';
import sharp from 'sharp';
import { ServiceError } from '../../models/errors.ts';
import { planarToRgb8, rgb8ToPlanar } from '../../models/runtime/image-layout.ts';
import { isPng, readPngText, withPngText } from './png-text.ts';

/** The PNG text keyword AUTOMATIC1111 stores generation parameters under. */
export const PARAMETERS_KEYWORD = 'parameters';

export const INPUT_FORMATS = ['jpeg', 'png', 'webp'] as const;
export type OutputFormat = 'jpeg' | 'png' | 'webp';

/** Largest input image in pixels (about 40 megapixels: a 8K frame fits, a 50000 x 50000 header does not). */
export const MAX_INPUT_PIXELS = 40_000_000;

export interface DecodedImage {
  /** [3, H, W] in [-1, 1] */
  readonly data: Float32Array;
  readonly width: number;
  readonly height: number;
}

export interface DecodedRgb8 {
  /** RGB bytes [H, W, 3] */
  readonly rgb: Uint8Array;
  readonly width: number;
  readonly height: number;
}

/** What becomes of the input outside the output's aspect: centre-cropped, or kept whole with black bars. */
export const FITS = ['crop', 'pad'] as const;
export type Fit = (typeof FITS)[number];

/** An input image's header: format and display size (EXIF rotation applied). */
export interface ImageInfo {
  readonly format: string;
  readonly width: number;
  readonly height: number;
  /** Upright sRGB with 3 channels and no alpha: at the target size it decodes as is. */
  readonly plain: boolean;
}

export interface DecodeOptions {
  /** Default crop. */
  readonly fit?: Fit;
  /** Default MAX_INPUT_PIXELS. */
  readonly maxPixels?: number;
  /** The header, when the caller read it already (probeImage). */
  readonly info?: ImageInfo;
}

/** Reads an image's header only. A bad image throws `bad_image`, one over the pixel limit `too_large`. */
export async function probeImage(bytes: Uint8Array, maxPixels = MAX_INPUT_PIXELS): Promise<ImageInfo> {
  if (bytes.length === 0) throw new ServiceError('bad_image', 'image is empty (0 bytes)');
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (cause) {
    throw new ServiceError('bad_image', `cannot read image: ${(cause as Error).message}`, { cause });
  }
  if (!meta.format || !(INPUT_FORMATS as readonly string[]).includes(meta.format)) {
    throw new ServiceError('bad_image', `unsupported image format ${meta.format ?? 'unknown'} (accepted: ${INPUT_FORMATS.join(', ')})`);
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (pixels > maxPixels) {
    throw new ServiceError('too_large', `image is ${meta.width}x${meta.height} pixels, more than the limit of ${maxPixels}`);
  }
  // EXIF orientations 5-8 turn the picture by 90 degrees: rotate() below swaps its sides
  const orientation = meta.orientation ?? 1;
  const turned = orientation >= 5;
  const [w, h] = [meta.width ?? 0, meta.height ?? 0];
  const plain = orientation === 1 && meta.channels === 3 && !meta.hasAlpha && meta.space === 'srgb';
  return { format: meta.format, width: turned ? h : w, height: turned ? w : h, plain };
}

/** Decodes an image to RGB bytes at width x height (`fit` for the rest). A bad image throws `bad_image` or `too_large`. */
export async function decodeRgb8(bytes: Uint8Array, width: number, height: number, options: DecodeOptions = {}): Promise<DecodedRgb8> {
  const maxPixels = options.maxPixels ?? MAX_INPUT_PIXELS;
  const info = options.info ?? (await probeImage(bytes, maxPixels));
  const asIs = info.plain && info.width === width && info.height === height;
  const resize: sharp.ResizeOptions = options.fit === 'pad' ? { fit: 'contain', background: { r: 0, g: 0, b: 0 } } : { fit: 'cover' };
  let raw: Buffer;
  try {
    const img = sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error' });
    raw = await (asIs ? img : img.rotate().removeAlpha().resize(width, height, resize).toColourspace('srgb')).raw().toBuffer();
  } catch (cause) {
    throw new ServiceError('bad_image', `cannot decode image: ${(cause as Error).message}`, { cause });
  }
  return { rgb: raw, width, height };
}

/** Decodes an image to [3, H, W] floats in [-1, 1] at width x height (see decodeRgb8). */
export async function decodeImage(bytes: Uint8Array, width: number, height: number, options: DecodeOptions = {}): Promise<DecodedImage> {
  const { rgb } = await decodeRgb8(bytes, width, height, options);
  return { data: rgb8ToTensor(rgb, width, height), width, height };
}

/** Interleaved RGB bytes [H, W, 3] -> [3, H, W] in [-1, 1]. */
export function rgb8ToTensor(rgb: Uint8Array, width: number, height: number): Float32Array {
  return rgb8ToPlanar(rgb, 1, height, width);
}

/** [3, H, W] in [-1, 1] -> interleaved RGB bytes [H, W, 3], clamped and rounded. */
export function tensorToRgb8(data: Float32Array, width: number, height: number): Buffer {
  const rgb = planarToRgb8(data, 1, height, width);
  return Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength);
}

/** Resizes an image [3, H, W] in [-1, 1] to width x height (Lanczos, on its 8-bit pixels as they will be saved). */
export async function resizeImage(data: Float32Array, from: { width: number; height: number }, width: number, height: number): Promise<Float32Array> {
  const raw = await sharp(tensorToRgb8(data, from.width, from.height), { raw: { width: from.width, height: from.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer();
  return rgb8ToTensor(raw, width, height);
}

/** [3, H, W] in [-1, 1] -> image bytes; `text` (generation parameters) is stored as the module comment says. */
export async function encodeImage(data: Float32Array, width: number, height: number, format: OutputFormat, quality = 85, text?: string): Promise<Buffer> {
  return encodeRgb8(tensorToRgb8(data, width, height), width, height, format, quality, text);
}

/** RGB bytes [H, W, 3] -> image bytes; `text` is stored as for {@link encodeImage}. */
export async function encodeRgb8(rgb: Uint8Array, width: number, height: number, format: OutputFormat, quality = 85, text?: string): Promise<Buffer> {
  const img = sharp(rgb, { raw: { width, height, channels: 3 } });
  if (format === 'png') {
    const png = await img.png().toBuffer();
    return text === undefined ? png : withPngText(png, PARAMETERS_KEYWORD, text);
  }
  if (text !== undefined) {
    img.withXmp(xmpPacket(text));
    if (/^[\x00-\x7f]*$/.test(text)) img.withExif({ IFD2: { UserComment: text } });
  }
  return format === 'jpeg' ? img.jpeg({ quality }).toBuffer() : img.webp({ quality }).toBuffer();
}

function xmpPacket(text: string): string {
  return (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">' +
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/">' +
    `<exif:UserComment><rdf:Alt><rdf:li xml:lang="x-default">${encodeXML(text)}</rdf:li></rdf:Alt></exif:UserComment>` +
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
  );
}

const XMP_COMMENT = /<exif:UserComment>\s*<rdf:Alt>\s*<rdf:li[^>]*>([\s\S]*?)<\/rdf:li>/;
/** EXIF UserComment starts with an 8-byte character code (CIPA DC-008 §4.6.5). */
const CHARACTER_CODES: Readonly<Record<string, (b: Buffer) => string>> = {
  'ASCII\0\0\0': (b) => b.toString('latin1'),
  'UNICODE\0': (b) => utf16(b),
  '\0\0\0\0\0\0\0\0': (b) => b.toString('utf8'),
};

/** UCS-2 with no byte order mark: big-endian by the standard, little-endian as some writers do (ASCII text shows which). */
function utf16(b: Buffer): string {
  const even = b.length - (b.length % 2);
  let zerosFirst = 0;
  for (let i = 0; i < even; i += 2) if (b[i] === 0) zerosFirst++;
  const bytes = Buffer.from(b.subarray(0, even));
  if (zerosFirst * 2 >= even / 2) bytes.swap16(); // big-endian: 0x00 'a' ... -> little-endian for Node
  return bytes.toString('utf16le');
}

/**
 * The generation-parameters text an image carries, if any: a PNG's `parameters` chunk, else XMP's
 * exif:UserComment, else EXIF UserComment (JPEG, WebP, and PNGs written by other tools).
 */
export async function readImageText(bytes: Uint8Array): Promise<string | undefined> {
  if (isPng(bytes)) {
    const chunk = readPngText(bytes).get(PARAMETERS_KEYWORD);
    if (chunk !== undefined) return chunk;
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes).metadata();
  } catch (cause) {
    throw new ServiceError('bad_image', `cannot read image: ${(cause as Error).message}`, { cause });
  }
  const xmp = meta.xmp && XMP_COMMENT.exec(meta.xmp.toString('utf8'));
  if (xmp) return decodeXML(xmp[1]!);
  if (!meta.exif) return undefined;
  let comment: Buffer | undefined;
  try {
    comment = exifReader(meta.exif).Photo?.UserComment;
  } catch {
    return undefined; // EXIF that does not parse carries nothing we can read
  }
  if (!comment || comment.length < 8) return undefined;
  const decode = CHARACTER_CODES[comment.toString('latin1', 0, 8)] ?? ((b: Buffer) => b.toString('utf8'));
  return decode(comment.subarray(8)).replace(/\0+$/, '');
}

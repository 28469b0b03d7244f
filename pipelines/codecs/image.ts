/**
 * Image bytes <-> model tensors, through sharp. Frames in: JPEG, PNG or WebP, checked before decoding
 * (format, pixel limit against decompression bombs), resized to cover the target size (centre crop),
 * converted to [3, H, W] floats in [-1, 1]. Frames out: [3, H, W] in [-1, 1] -> JPEG, PNG or WebP.
 */
import sharp from 'sharp';
import { ServiceError } from '../../models/errors.ts';

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

/** Decodes an image and resizes it to width x height. A bad image throws `bad_image` or `too_large`. */
export async function decodeImage(bytes: Uint8Array, width: number, height: number, maxPixels = MAX_INPUT_PIXELS): Promise<DecodedImage> {
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
  let raw: Buffer;
  try {
    raw = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error' })
      .rotate()
      .removeAlpha()
      .resize(width, height, { fit: 'cover' })
      .toColourspace('srgb')
      .raw()
      .toBuffer();
  } catch (cause) {
    throw new ServiceError('bad_image', `cannot decode image: ${(cause as Error).message}`, { cause });
  }
  return { data: rgb8ToTensor(raw, width, height), width, height };
}

/** Interleaved RGB bytes [H, W, 3] -> [3, H, W] in [-1, 1]. */
export function rgb8ToTensor(rgb: Uint8Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    out[p] = rgb[3 * p]! / 127.5 - 1;
    out[plane + p] = rgb[3 * p + 1]! / 127.5 - 1;
    out[2 * plane + p] = rgb[3 * p + 2]! / 127.5 - 1;
  }
  return out;
}

/** [3, H, W] in [-1, 1] -> interleaved RGB bytes [H, W, 3], clamped and rounded. */
export function tensorToRgb8(data: Float32Array, width: number, height: number): Buffer {
  const plane = width * height;
  const out = Buffer.alloc(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.round((data[c * plane + p]! + 1) * 127.5);
      out[3 * p + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

export async function encodeImage(data: Float32Array, width: number, height: number, format: OutputFormat, quality = 85): Promise<Buffer> {
  const img = sharp(tensorToRgb8(data, width, height), { raw: { width, height, channels: 3 } });
  switch (format) {
    case 'png':
      return img.png().toBuffer();
    case 'jpeg':
      return img.jpeg({ quality }).toBuffer();
    case 'webp':
      return img.webp({ quality }).toBuffer();
  }
}

/**
 * The frame a stable stream URL shows while no stream of that name runs: "waiting for NAME" under a pause
 * sign, as a real JPEG, so OBS and browsers keep the source open and show why it is empty. The sign is drawn
 * as shapes, so the frame says "waiting" even on a machine without fonts for the text.
 */
import sharp from 'sharp';

/** JPEG quality of the placeholder (flat colours: small at any quality). */
const QUALITY = 80;

/** A placeholder JPEG of width x height saying "waiting for `name`" (name: a stream-name slug). */
export async function placeholderJpeg(name: string, width: number, height: number): Promise<Buffer> {
  const text = `waiting for ${name}`;
  // text as wide as the frame allows: about 0.6 em per character in a sans font
  const fontSize = Math.max(6, Math.min(height / 9, (width * 0.9) / (0.6 * text.length)));
  const bar = { w: Math.max(2, width * 0.04), h: height * 0.28 };
  const cx = width / 2;
  const top = height * 0.22;
  const svg = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">`,
    `<rect width="100%" height="100%" fill="#1c2128"/>`,
    `<rect x="${cx - bar.w * 1.75}" y="${top}" width="${bar.w}" height="${bar.h}" fill="#8b949e"/>`,
    `<rect x="${cx + bar.w * 0.75}" y="${top}" width="${bar.w}" height="${bar.h}" fill="#8b949e"/>`,
    `<text x="${cx}" y="${height * 0.74}" font-family="sans-serif" font-size="${fontSize.toFixed(1)}" fill="#e6edf3" text-anchor="middle">${escapeXml(text)}</text>`,
    `</svg>`,
  ].join('');
  return sharp(Buffer.from(svg)).flatten().jpeg({ quality: QUALITY }).toBuffer();
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

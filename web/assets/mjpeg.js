// @ts-check
/**
 * Reads a multipart/x-mixed-replace MJPEG response (server/PROTOCOL.md: `--frame`, headers with
 * Content-Length, the JPEG, CRLF) part by part. Hand-written: browsers only parse MJPEG inside <img>, whose
 * endless response keeps a page from ever finishing to load (which OBS's Browser Source waits for).
 */

const encoder = new TextEncoder();
const HEADER_END = encoder.encode('\r\n\r\n');

/**
 * @param {Uint8Array} haystack
 * @param {Uint8Array} needle
 * @param {number} from
 */
function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * Calls `onPart` with each JPEG of the body until it ends (resolves) or fails (rejects).
 * @param {ReadableStream<Uint8Array>} body
 * @param {(jpeg: Blob) => void} onPart
 */
export async function readMjpeg(body, onPart) {
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    // every complete part in the buffer
    for (;;) {
      const headerEnd = indexOf(buffer, HEADER_END, 0);
      if (headerEnd < 0) break;
      const headers = new TextDecoder().decode(buffer.subarray(0, headerEnd));
      const length = Number(/content-length:\s*(\d+)/i.exec(headers)?.[1]);
      if (!Number.isFinite(length)) throw new Error('an MJPEG part without Content-Length');
      const start = headerEnd + HEADER_END.length;
      if (buffer.length < start + length) break;
      onPart(new Blob([buffer.slice(start, start + length)], { type: 'image/jpeg' }));
      buffer = buffer.slice(start + length);
    }
  }
}

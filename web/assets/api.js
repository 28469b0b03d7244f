// @ts-check
/**
 * The page's way to the server: the API key from `?token=` (HTTP calls send it as a Bearer header; WebSocket
 * and MJPEG URLs, which cannot carry headers, get `?token=`), JSON calls whose failures become ApiErrors with
 * the server's stable code and message ({"error": {"code", "message", "field"}}, server/PROTOCOL.md).
 */

/** The API key given in the page URL, if any. */
export const token = new URLSearchParams(location.search).get('token') ?? '';

/** A failed call: `code` is the server's error code (or `network` / `http_<status>` when it sent none). */
export class ApiError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} [field] the request field at fault
   */
  constructor(code, message, status, field) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.field = field;
  }

  /** True when the server has no such route (an optional feature that is not installed). */
  get routeMissing() {
    return this.status === 404 && /^no route /.test(this.message);
  }
}

/**
 * An absolute URL on this server, with `?token=` when the page has one (for sockets, MJPEG, links).
 * @param {string} path
 * @param {'http' | 'ws'} [scheme]
 */
export function serverUrl(path, scheme = 'http') {
  const url = new URL(path, location.href);
  if (token) url.searchParams.set('token', token);
  if (scheme === 'ws') url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** Keeps `?token=` on links between the pages. */
export function keepTokenOnLinks() {
  if (!token) return;
  for (const a of document.querySelectorAll('a[data-keep-token]')) {
    if (a instanceof HTMLAnchorElement) a.href = serverUrl(a.getAttribute('href') ?? '/');
  }
}

/**
 * fetch() with the API key; non-2xx answers throw an ApiError with the server's message.
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
export async function apiFetch(path, init = {}) {
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let res;
  try {
    res = await fetch(path, { ...init, headers });
  } catch (e) {
    throw new ApiError('network', `cannot reach the server (${e instanceof Error ? e.message : String(e)})`, 0);
  }
  if (res.ok) return res;
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const err = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : undefined;
  throw new ApiError(err?.code ?? `http_${res.status}`, err?.message ?? `${res.status} ${res.statusText}`, res.status, err?.field);
}

/**
 * A JSON call; resolves to the parsed body. `body` is sent with POST (or `method`): FormData as
 * multipart, anything else as JSON.
 * @param {string} path
 * @param {unknown} [body]
 * @param {string} [method]
 * @returns {Promise<any>}
 */
export async function apiJson(path, body, method) {
  /** @type {RequestInit} */
  const init = { method: method ?? (body === undefined ? 'GET' : 'POST') };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  const res = await apiFetch(path, init);
  return res.status === 204 ? undefined : res.json();
}

/**
 * A readable one-line description of any error.
 * @param {unknown} error
 */
export function describeError(error) {
  if (error instanceof ApiError) return `${error.message}${error.code.startsWith('http_') || error.code === 'network' ? '' : ` (${error.code})`}`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * The element with this id, checked to be of the expected type (a typo or a missing element fails loudly).
 * @template {Element} T
 * @param {string} id
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} is missing or not a ${type.name}`);
  return el;
}

/**
 * Triggers a download of `blob` as `name`.
 * @param {Blob} blob
 * @param {string} name
 */
export function downloadBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

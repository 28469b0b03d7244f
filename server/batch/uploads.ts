/**
 * Multipart uploads (multer), size-limited by config.maxUploadBytes: images in memory (OpenAI edits),
 * videos on disk under <dataDir>/uploads (moved into the job's folder once the job is accepted).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RequestHandler } from 'express';
import multer from 'multer';
import { ServiceError } from '../../models/errors.ts';
import type { ServerConfig } from '../config.ts';

/** Form text fields: enough for a prompt and every parameter. */
const FORM_LIMITS = { fields: 40, fieldSize: 64 * 1024, parts: 60 };
/** Most images in one edits request (OpenAI accepts up to 16 for gpt-image-1). */
export const MAX_EDIT_IMAGES = 16;
/** Upload leftovers (a request that died mid-way) older than this are removed at start. */
const STALE_UPLOAD_MS = 3600 * 1000;

export function uploadsDir(config: ServerConfig): string {
  return join(config.dataDir, 'uploads');
}

/**
 * A multer middleware whose parse errors are the client's: a truncated or malformed multipart body (busboy's
 * "Unexpected end of form", "Malformed part header" ...) is 400 bad_request. Multer's own limit errors
 * (LIMIT_*) and the file system's (ENOSPC ...) keep their meaning.
 */
function clientErrors(upload: RequestHandler): RequestHandler {
  return (req, res, next) =>
    upload(req, res, (error?: unknown) => {
      if (error === undefined || error === null) return next();
      const e = error as { code?: unknown; errno?: unknown; message?: unknown };
      const ours = e instanceof multer.MulterError || typeof e.errno === 'number' || error instanceof ServiceError;
      next(ours ? error : new ServiceError('bad_request', `malformed multipart/form-data body: ${String(e.message ?? error)}`, { cause: error }));
    });
}

/** OpenAI edits: `image` (or `image[]`, as the SDK sends several) and an optional `mask`, in memory. */
export function imageUpload(config: ServerConfig): RequestHandler {
  return clientErrors(multer({
    storage: multer.memoryStorage(),
    limits: { ...FORM_LIMITS, fileSize: config.maxUploadBytes, files: MAX_EDIT_IMAGES + 1 },
  }).fields([
    { name: 'image', maxCount: MAX_EDIT_IMAGES },
    { name: 'image[]', maxCount: MAX_EDIT_IMAGES },
    { name: 'mask', maxCount: 1 },
  ]));
}

/** A video job's file in field `video`, streamed to disk. */
export function videoUpload(config: ServerConfig): RequestHandler {
  const dir = uploadsDir(config);
  const storage = multer.diskStorage({
    destination: (_req, _file, cb) => {
      try {
        mkdirSync(dir, { recursive: true });
        cb(null, dir);
      } catch (error) {
        cb(error as Error, dir);
      }
    },
    filename: (_req, _file, cb) => cb(null, `${randomUUID()}.upload`),
  });
  return clientErrors(multer({ storage, limits: { ...FORM_LIMITS, fileSize: config.maxUploadBytes, files: 1 } }).single('video'));
}

/** Removes uploads left behind by requests that never finished. */
export async function removeStaleUploads(config: ServerConfig, now = Date.now()): Promise<void> {
  const dir = uploadsDir(config);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const path = join(dir, name);
    const s = await stat(path).catch(() => undefined);
    if (s && now - s.mtimeMs > STALE_UPLOAD_MS) await rm(path, { force: true });
  }
}

/** A safe extension for a stored upload, from the client's file name (ffmpeg reads the content anyway). */
export function videoExtension(originalName: string): string {
  const ext = /\.([a-z0-9]{1,5})$/i.exec(originalName)?.[1]?.toLowerCase();
  return ext ?? 'bin';
}

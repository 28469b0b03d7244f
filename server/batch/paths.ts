/**
 * Server-side video paths: a path must resolve, symlinks followed (realpath), to a file under one of the
 * configured video folders; anything else is 403. Relative paths are taken relative to each folder.
 */
import { realpath, stat } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { ServiceError } from '../../models/errors.ts';

function under(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** The real path of `path` if it is a file under one of `dirs`; 403 outside them, 404 when missing inside. */
export async function resolveVideoPath(dirs: readonly string[], path: string): Promise<string> {
  if (dirs.length === 0) throw new ServiceError('forbidden', 'path: server-side video paths are disabled (the server has no --video-dir)', { field: 'path' });
  if (path.includes('\0')) throw new ServiceError('bad_request', 'path: contains a NUL byte', { field: 'path' });
  let missing = false;
  for (const dir of dirs) {
    const root = await realpath(dir).catch(() => undefined);
    if (!root) continue;
    const candidate = resolve(dir, path);
    if (!under(candidate, resolve(dir)) && !under(candidate, root)) continue;
    const real = await realpath(candidate).catch(() => undefined);
    if (!real) {
      missing = true;
      continue;
    }
    if (!under(real, root)) continue; // a symlink out of the folder
    if (!(await stat(real)).isFile()) throw new ServiceError('bad_request', `path: ${path} is not a file`, { field: 'path' });
    return real;
  }
  if (missing) throw new ServiceError('not_found', `path: no video ${path} in the allowed folders`, { field: 'path' });
  throw new ServiceError('forbidden', `path: ${path} is not under an allowed video folder`, { field: 'path' });
}

/**
 * Images returned by URL (OpenAI's response_format "url"): stored under <dataDir>/results/<uuid>.<ext>
 * and served at GET /v1/images/results/<name> until the retention limit.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ServiceError } from '../../models/errors.ts';

const RESULT_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(png|jpeg|webp)$/;

export class ResultStore {
  constructor(
    readonly root: string,
    readonly retentionMs: number,
  ) {}

  /** Stores bytes, returns the file name. */
  async put(bytes: Uint8Array, ext: 'png' | 'jpeg' | 'webp'): Promise<string> {
    await mkdir(this.root, { recursive: true });
    const name = `${randomUUID()}.${ext}`;
    const tmp = join(this.root, `${name}.tmp`);
    await writeFile(tmp, bytes);
    await rename(tmp, join(this.root, name));
    return name;
  }

  /** Checks that `name` is a stored result (a name not of our making is a 404) and returns the folder it is in. */
  async checked(name: string): Promise<string> {
    const path = join(this.root, name);
    if (!RESULT_NAME.test(name) || !(await stat(path).then((s) => s.isFile(), () => false))) {
      throw new ServiceError('not_found', `no result ${name}`, { field: 'name' });
    }
    return this.root;
  }

  /** Deletes results older than the retention limit (and temporary files). */
  async prune(now = Date.now()): Promise<void> {
    const names = await readdir(this.root).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(this.root, name);
      const s = await stat(path).catch(() => undefined);
      const age = s ? now - s.mtimeMs : 0;
      if (s && (age > this.retentionMs || (name.endsWith('.tmp') && age > 60_000))) await rm(path, { force: true });
    }
  }
}

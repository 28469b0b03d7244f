/**
 * The adapter folders: the pack's own (read-only: never written, never replaced) and the upload folder (under
 * the server's --data-dir), kohya LoRA safetensors files listed side by side and parsed (cached by modification
 * time and size). An upload is checked completely (name, size, format, and whatever `fits` checks against the
 * model) before anything is written, and lands atomically: written to a temporary file, then linked to its name
 * (which fails if the name exists: of concurrent uploads of one name exactly one wins, the rest get 409), or
 * renamed over the old file with `replace`.
 */
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { link, mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ServiceError } from '../errors.ts';
import { ADAPTER_NAME, BASIS_FILE_NAME, type AdapterLimits } from './choices.ts';
import { readKohyaAdapter, type KohyaAdapter } from './kohya.ts';
import { DEFAULT_SAFETENSORS_LIMITS, parseSafetensors } from './safetensors.ts';

export const ADAPTER_EXTENSION = '.safetensors';

/** Where an adapter comes from: the model pack (read-only) or an upload. */
export type AdapterSourceKind = 'pack' | 'upload';

export interface AdapterInfo {
  readonly name: string;
  readonly source: AdapterSourceKind;
  readonly bytes: number;
  readonly rank: number;
  /** LoRA layers in the file. */
  readonly layers: number;
  /** From the metadata when present: 'orthogonal' | 'lora' | ... */
  readonly method: string | undefined;
  readonly concept: string | undefined;
  readonly trigger: string | undefined;
  /** Prompt words the adapter brings a learned embedding for (they read as its concept only while it is active). */
  readonly conceptTokens: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
}

function infoOf(name: string, source: AdapterSourceKind, bytes: number, adapter: KohyaAdapter): AdapterInfo {
  const m = adapter.metadata;
  return {
    name,
    source,
    bytes,
    rank: adapter.layers[0]?.rank ?? 0,
    layers: adapter.layers.length,
    method: m['method'],
    concept: m['concept'],
    trigger: m['trigger'],
    conceptTokens: adapter.embeddings.map((e) => e.word),
    metadata: m,
  };
}

export class AdapterFiles {
  readonly dir: string;
  readonly uploadDir: string | undefined;
  private readonly parsed = new Map<string, { path: string; mtimeMs: number; size: number; adapter: KohyaAdapter; info: AdapterInfo }>();
  /** Names with an upload in progress (a second upload of one of them is refused at once). */
  private readonly uploading = new Set<string>();

  constructor(
    /** The pack's adapter folder (read-only). */
    dir: string,
    private readonly limits: AdapterLimits,
    /** Where uploads are stored; none: uploads are refused. */
    uploadDir?: string,
  ) {
    this.dir = resolve(dir);
    this.uploadDir = uploadDir === undefined ? undefined : resolve(uploadDir);
  }

  /** The adapters of both folders (valid files only, sorted by name; a pack adapter hides an upload of its name). */
  async list(): Promise<AdapterInfo[]> {
    const names = new Set<string>();
    for (const dir of this.folders()) {
      const files = await readdir(dir).catch(() => [] as string[]); // no folder: no adapters
      for (const f of files) if (f.endsWith(ADAPTER_EXTENSION)) names.add(f.slice(0, -ADAPTER_EXTENSION.length));
    }
    const out: AdapterInfo[] = [];
    for (const name of [...names].sort()) {
      if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) continue;
      try {
        out.push((await this.load(name)).info);
      } catch {
        // a broken file is skipped here; asking for it by name reports the error
      }
    }
    return out;
  }

  /**
   * Checks and stores an uploaded adapter; `fits` checks it against the model. Nothing is written unless all
   * pass. A name already taken is a conflict, unless `replace` (an upload only: the pack's adapters are read-only).
   */
  async add(name: string, bytes: Uint8Array, fits: (adapter: KohyaAdapter) => Promise<void>, options: { replace?: boolean } = {}): Promise<AdapterInfo> {
    // 1. name, size, and who owns the name
    if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) {
      throw new ServiceError('bad_request', `adapter name must match ${ADAPTER_NAME} (lower-case letters, digits, _ and -, at most 64) and not be "${BASIS_FILE_NAME}"`, { field: 'name' });
    }
    const uploadDir = this.uploadDir;
    if (!uploadDir) throw new ServiceError('unsupported', 'this server stores no adapter uploads (it has no data directory)');
    if (bytes.length > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${bytes.length} bytes; the limit is ${this.limits.maxBytes}`);
    if (this.isFile(join(this.dir, name + ADAPTER_EXTENSION))) {
      throw new ServiceError('conflict', `adapter ${name} belongs to the model pack and cannot be replaced; upload it under another name`, { field: 'name' });
    }
    if (this.uploading.has(name)) throw new ServiceError('conflict', `an upload of adapter ${name} is already in progress`, { field: 'name' });
    const target = join(uploadDir, name + ADAPTER_EXTENSION);
    if (!options.replace && this.isFile(target)) throw new ServiceError('conflict', `adapter ${name} already exists (add ?replace=1 to replace it)`, { field: 'name' });
    this.uploading.add(name);
    try {
      // 2. format, then the fit to the model
      await fits(this.parse(bytes, name));
      // 3. atomic: a temporary file, then linked (no-clobber) or renamed (replace) to its name
      const tmp = join(uploadDir, `.${name}.${randomUUID()}.tmp`);
      try {
        await mkdir(uploadDir, { recursive: true });
        await writeFile(tmp, bytes, { flag: 'wx' });
        if (options.replace) await rename(tmp, target);
        else await link(tmp, target);
      } catch (cause) {
        if ((cause as NodeJS.ErrnoException).code === 'EEXIST') throw new ServiceError('conflict', `adapter ${name} already exists (add ?replace=1 to replace it)`, { field: 'name' });
        throw new ServiceError('internal', `cannot store adapter ${name}: ${(cause as Error).message}`, { cause });
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
      this.parsed.delete(name);
      return (await this.load(name)).info;
    } finally {
      this.uploading.delete(name);
    }
  }

  /** Parses an adapter file, cached by modification time and size (read asynchronously: files can be 100+ MB). */
  async load(name: string): Promise<{ adapter: KohyaAdapter; info: AdapterInfo }> {
    const found = this.locate(name);
    if (!found) throw new ServiceError('not_found', `no adapter named ${name}`, { field: 'adapters' });
    let file;
    try {
      file = await stat(found.path);
    } catch (cause) {
      throw new ServiceError('not_found', `no adapter named ${name}`, { cause, field: 'adapters' });
    }
    const hit = this.parsed.get(name);
    if (hit && hit.path === found.path && hit.mtimeMs === file.mtimeMs && hit.size === file.size) return hit;
    if (file.size > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${file.size} bytes; the limit is ${this.limits.maxBytes}`);
    const adapter = this.parse(await readFile(found.path), name);
    const entry = { path: found.path, mtimeMs: file.mtimeMs, size: file.size, adapter, info: infoOf(name, found.source, file.size, adapter) };
    this.parsed.set(name, entry);
    return entry;
  }

  /** Whether an adapter file of that name exists in either folder (the basis file is no adapter). */
  has(name: string): boolean {
    return this.locate(name) !== undefined;
  }

  private folders(): string[] {
    return this.uploadDir ? [this.dir, this.uploadDir] : [this.dir];
  }

  /** The pack's file if it has one, else the upload's. */
  private locate(name: string): { path: string; source: AdapterSourceKind } | undefined {
    if (name === BASIS_FILE_NAME || !ADAPTER_NAME.test(name)) return undefined;
    const own = join(this.dir, name + ADAPTER_EXTENSION);
    if (this.isFile(own)) return { path: own, source: 'pack' };
    const uploaded = this.uploadDir && join(this.uploadDir, name + ADAPTER_EXTENSION);
    if (uploaded && this.isFile(uploaded)) return { path: uploaded, source: 'upload' };
    return undefined;
  }

  private isFile(path: string): boolean {
    try {
      return statSync(path).isFile();
    } catch {
      return false;
    }
  }

  private parse(bytes: Uint8Array, name: string): KohyaAdapter {
    return readKohyaAdapter(parseSafetensors(bytes, `adapter ${name}`, { ...DEFAULT_SAFETENSORS_LIMITS, maxBytes: this.limits.maxBytes }), `adapter ${name}`);
  }
}

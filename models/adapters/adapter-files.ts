/**
 * The adapter folder: kohya LoRA safetensors files, listed and parsed (cached by modification time and size)
 * and uploads written into it. An upload is checked completely (name, size, format, and whatever `fits` checks
 * against the model) before anything is written, and is written atomically (temporary file + rename).
 */
import { statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ServiceError } from '../errors.ts';
import { ADAPTER_NAME, BASIS_FILE_NAME, type AdapterLimits } from './choices.ts';
import { readKohyaAdapter, type KohyaAdapter } from './kohya.ts';
import { DEFAULT_SAFETENSORS_LIMITS, parseSafetensors } from './safetensors.ts';

export const ADAPTER_EXTENSION = '.safetensors';

export interface AdapterInfo {
  readonly name: string;
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

function infoOf(name: string, bytes: number, adapter: KohyaAdapter): AdapterInfo {
  const m = adapter.metadata;
  return {
    name,
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
  private readonly parsed = new Map<string, { mtimeMs: number; size: number; adapter: KohyaAdapter; info: AdapterInfo }>();

  constructor(
    dir: string,
    private readonly limits: AdapterLimits,
  ) {
    this.dir = resolve(dir);
  }

  /** The adapters in the folder (valid files only, sorted by name). Reads headers of new or changed files. */
  async list(): Promise<AdapterInfo[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((f) => f.endsWith(ADAPTER_EXTENSION)).map((f) => f.slice(0, -ADAPTER_EXTENSION.length));
    } catch {
      return []; // no adapter folder: no adapters
    }
    const out: AdapterInfo[] = [];
    for (const name of names.sort()) {
      if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) continue;
      try {
        out.push((await this.load(name)).info);
      } catch {
        // a broken file is skipped here; asking for it by name reports the error
      }
    }
    return out;
  }

  /** Checks and stores an uploaded adapter; `fits` checks it against the model. Nothing is written unless all pass. */
  async add(name: string, bytes: Uint8Array, fits: (adapter: KohyaAdapter) => Promise<void>): Promise<AdapterInfo> {
    // 1. name and size
    if (!ADAPTER_NAME.test(name) || name === BASIS_FILE_NAME) {
      throw new ServiceError('bad_request', `adapter name must match ${ADAPTER_NAME} (lower-case letters, digits, _ and -, at most 64) and not be "${BASIS_FILE_NAME}"`, { field: 'name' });
    }
    if (bytes.length > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${bytes.length} bytes; the limit is ${this.limits.maxBytes}`);
    if (this.has(name)) throw new ServiceError('conflict', `adapter ${name} already exists`, { field: 'name' });
    // 2. format, then the fit to the model
    await fits(this.parse(bytes, name));
    // 3. atomic write
    const tmp = join(this.dir, `.${name}.${process.pid}.${Date.now()}.tmp`);
    try {
      await mkdir(this.dir, { recursive: true });
      await writeFile(tmp, bytes, { flag: 'wx' });
      await rename(tmp, this.pathOf(name));
    } catch (cause) {
      await unlink(tmp).catch(() => undefined);
      throw new ServiceError('internal', `cannot store adapter ${name}: ${(cause as Error).message}`, { cause });
    }
    return (await this.load(name)).info;
  }

  /** Parses an adapter file, cached by modification time and size (read asynchronously: files can be 100+ MB). */
  async load(name: string): Promise<{ adapter: KohyaAdapter; info: AdapterInfo }> {
    const path = this.pathOf(name);
    let file;
    try {
      file = await stat(path);
    } catch (cause) {
      throw new ServiceError('not_found', `no adapter named ${name}`, { cause });
    }
    const hit = this.parsed.get(name);
    if (hit && hit.mtimeMs === file.mtimeMs && hit.size === file.size) return hit;
    if (file.size > this.limits.maxBytes) throw new ServiceError('too_large', `adapter ${name} is ${file.size} bytes; the limit is ${this.limits.maxBytes}`);
    const adapter = this.parse(await readFile(path), name);
    const entry = { mtimeMs: file.mtimeMs, size: file.size, adapter, info: infoOf(name, file.size, adapter) };
    this.parsed.set(name, entry);
    return entry;
  }

  /** Whether an adapter file of that name exists (the basis file is no adapter). */
  has(name: string): boolean {
    if (name === BASIS_FILE_NAME) return false;
    try {
      return statSync(this.pathOf(name)).isFile();
    } catch {
      return false;
    }
  }

  private parse(bytes: Uint8Array, name: string): KohyaAdapter {
    return readKohyaAdapter(parseSafetensors(bytes, `adapter ${name}`, { ...DEFAULT_SAFETENSORS_LIMITS, maxBytes: this.limits.maxBytes }), `adapter ${name}`);
  }

  private pathOf(name: string): string {
    return join(this.dir, name + ADAPTER_EXTENSION);
  }
}

/** Reading a pack's small files: existence checks and JSON with errors that name the file. */
import { access, readFile } from 'node:fs/promises';
import { ServiceError } from './errors.ts';

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Parses a JSON file; a missing file or invalid JSON is a model_invalid error naming `what`. */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new ServiceError('model_invalid', `${what} is missing (${path})`, { cause });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new ServiceError('model_invalid', `${what} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

/** readJsonFile for files that must hold one JSON object. */
export async function readJsonObject(path: string, what: string): Promise<Record<string, unknown>> {
  const value = await readJsonFile(path, what);
  if (!isRecord(value)) throw new ServiceError('model_invalid', `${what} must be a JSON object`);
  return value;
}

/** A model_invalid error about one field of a pack file. */
export function invalidField(source: string, field: string, message: string): ServiceError {
  return new ServiceError('model_invalid', `${source}: ${field} ${message}`, { field });
}

/** A JSON object: not null, not an array. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

import { cp, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const CONTRACTS = join(FIXTURES, 'contracts');
/** A randomly initialised pack with the embedded pack's architecture and contracts (fast to run). */
export const BASE_PACK = join(CONTRACTS, 'base');
export const CONTRACT_VARIANTS = ['base', 'int64-timestep', 'scalar-timestep', 'fp16', 'latent-parameters', 'int64-ids', 'external-data'] as const;

/** A throw-away copy of a fixture pack to break on purpose. */
export async function copyPack(source = BASE_PACK): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pack-'));
  await cp(source, dir, { recursive: true });
  return dir;
}

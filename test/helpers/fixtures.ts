import { cp, mkdtemp, readdir, symlink } from 'node:fs/promises';
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

/**
 * A pack with a tiny VAE (taesd_*): `source` itself when it has one, else `source` (linked, not copied) with its
 * own VAE linked in again as the tiny one: the loader runs a tiny VAE at scale factor 1, so on a pack whose
 * scaling_factor is not 1 the two VAEs differ.
 */
export async function linkPackWithTinyVae(source: string): Promise<string> {
  const entries = await readdir(source);
  if (entries.includes('taesd_encoder') && entries.includes('taesd_decoder')) return source;
  const dir = await mkdtemp(join(tmpdir(), 'pack-tiny-vae-'));
  for (const entry of entries) await symlink(join(source, entry), join(dir, entry));
  await symlink(join(source, 'vae_encoder'), join(dir, 'taesd_encoder'));
  await symlink(join(source, 'vae_decoder'), join(dir, 'taesd_decoder'));
  return dir;
}

/** Adapter files made for tests from the fixtures: scaled (poisoned) copies. */
import { readFile } from 'node:fs/promises';
import { encodeSafetensors, parseSafetensors } from '../../models/adapters/safetensors.ts';

/** A copy of an adapter file with every lora_up weight multiplied by `factor` (1e37: finite, and it breaks the model). */
export async function scaledAdapter(path: string, factor: number): Promise<Uint8Array> {
  const file = parseSafetensors(new Uint8Array(await readFile(path)), path);
  const tensors = new Map(
    [...file.tensors].map(([name, t]) => [name, { shape: t.shape, data: name.endsWith('.lora_up.weight') ? t.data.map((v) => v * factor) : t.data }] as const),
  );
  return encodeSafetensors(tensors, { ...file.metadata });
}

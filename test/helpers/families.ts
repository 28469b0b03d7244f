/**
 * The model-family test packs (test/fixtures/families/<family>/): SD 1.5, SD-Turbo and SDXL-Turbo with their real
 * architectures, module names and I/O contracts at reduced width and random weights, built by
 * models/train/families/build_fixtures.sh, each with a kohya LoRA (adapters/detail.safetensors) and torch's
 * outputs with and without it (references/<family>.safetensors).
 */
import { join } from 'node:path';
import { FIXTURES } from './fixtures.ts';

export const FAMILIES_DIR = join(FIXTURES, 'families');

export interface FamilyFixture {
  readonly name: 'sd15' | 'sd-turbo' | 'sdxl-turbo';
  readonly dir: string;
  readonly reference: string;
  /** What the pack was exported as (models/train/families/onnx_export.py). */
  readonly vintage: 'diffusers-script' | 'optimum-1.14' | 'optimum-1.24';
  readonly fp16: boolean;
  /** Image sides must be multiples of this (the UNet's down-sampling x the VAE's 8). */
  readonly multiple: number;
}

export const FAMILIES: readonly FamilyFixture[] = [
  { name: 'sd15', vintage: 'diffusers-script', fp16: false, multiple: 64 },
  { name: 'sd-turbo', vintage: 'optimum-1.14', fp16: true, multiple: 64 },
  { name: 'sdxl-turbo', vintage: 'optimum-1.24', fp16: false, multiple: 32 },
].map((f) => ({ ...f, dir: join(FAMILIES_DIR, f.name), reference: join(FAMILIES_DIR, 'references', `${f.name}.safetensors`) }) as FamilyFixture);

/** The LoRA every family pack ships, and the weight its reference outputs were computed at. */
export const FAMILY_LORA = 'detail';

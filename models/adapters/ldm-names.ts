/**
 * LDM (original Stable Diffusion / SGM) module names for a diffusers UNet's modules. kohya's sd-scripts writes SDXL
 * LoRAs with these names (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q), while the exported graph's
 * nodes carry diffusers paths (/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul). The layout is
 * read from the graph's own module paths (resnets per block, which up blocks have attentions), so the same rule
 * serves SD 1.x/2.x (4 blocks) and SDXL (3 blocks). Mapping, with n = resnets per down block + 1:
 *   down_blocks.i.resnets.j  -> input_blocks.(1 + i n + j).0    down_blocks.i.attentions.j -> input_blocks.(1 + i n + j).1
 *   down_blocks.i.downsamplers.0.conv -> input_blocks.((i + 1) n).0.op
 *   mid_block.resnets.0 / attentions.0 / resnets.1 -> middle_block.0 / 1 / 2
 *   up_blocks.i.resnets.j    -> output_blocks.(i n + j).0       up_blocks.i.attentions.j   -> output_blocks.(i n + j).1
 *   up_blocks.i.upsamplers.0.conv -> output_blocks.(i n + n - 1).(2 with attentions, else 1).conv
 *   inside resnets: norm1 in_layers.0, conv1 in_layers.2, time_emb_proj emb_layers.1, norm2 out_layers.0,
 *   conv2 out_layers.3, conv_shortcut skip_connection; conv_in input_blocks.0.0, time_embedding.linear_1/2
 *   time_embed.0/2, add_embedding.linear_1/2 label_emb.0.0/2, conv_norm_out out.0, conv_out out.2.
 */
const RESNET: Readonly<Record<string, string>> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  time_emb_proj: 'emb_layers.1',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  conv_shortcut: 'skip_connection',
};
const TOP: Readonly<Record<string, string>> = {
  conv_in: 'input_blocks.0.0',
  'time_embedding.linear_1': 'time_embed.0',
  'time_embedding.linear_2': 'time_embed.2',
  'add_embedding.linear_1': 'label_emb.0.0',
  'add_embedding.linear_2': 'label_emb.0.2',
  conv_norm_out: 'out.0',
  conv_out: 'out.2',
};

interface Layout {
  /** Resnets per down block + 1 (3 for SD and SDXL). */
  readonly n: number;
  readonly upHasAttention: (block: number) => boolean;
}

/** A resnet's sub-module under its LDM block (`at` is the block, e.g. input_blocks.4.0 or middle_block.2). */
function resnet(at: string, rest: readonly string[]): string | undefined {
  const inner = RESNET[rest[0] ?? ''];
  return inner === undefined || rest.length !== 1 ? undefined : `${at}.${inner}`;
}

/** The LDM path of one diffusers module path, or undefined when it has none. */
export function ldmPath(path: string, layout: Layout): string | undefined {
  if (path in TOP) return TOP[path];
  const [block, a, kind, b, ...rest] = path.split('.');
  const { n } = layout;
  if (block === 'down_blocks' || block === 'up_blocks') {
    const i = Number(a);
    const j = Number(b);
    if (!Number.isInteger(i) || !Number.isInteger(j)) return undefined;
    if (block === 'down_blocks' && kind === 'downsamplers') return rest.join('.') === 'conv' ? `input_blocks.${(i + 1) * n}.0.op` : undefined;
    if (block === 'up_blocks' && kind === 'upsamplers') return rest.join('.') === 'conv' ? `output_blocks.${i * n + n - 1}.${layout.upHasAttention(i) ? 2 : 1}.conv` : undefined;
    const at = block === 'down_blocks' ? `input_blocks.${1 + i * n + j}` : `output_blocks.${i * n + j}`;
    if (kind === 'resnets') return resnet(`${at}.0`, rest);
    if (kind === 'attentions') return [`${at}.1`, ...rest].join('.');
    return undefined;
  }
  if (block === 'mid_block') {
    const j = Number(kind);
    const tail = [b, ...rest].filter((p): p is string => p !== undefined);
    if (a === 'resnets' && (j === 0 || j === 1)) return resnet(`middle_block.${2 * j}`, tail);
    if (a === 'attentions' && j === 0) return ['middle_block.1', ...tail].join('.');
  }
  return undefined;
}

/** LDM keys (path with "_") -> diffusers module path, for the UNet module paths given; empty for other graphs. */
export function ldmAliases(paths: readonly string[]): Map<string, string> {
  const resnets = paths.map((p) => /^down_blocks\.0\.resnets\.(\d+)\./.exec(p + '.')?.[1]).filter((j): j is string => j !== undefined);
  const aliases = new Map<string, string>();
  if (resnets.length === 0) return aliases;
  const n = Math.max(...resnets.map(Number)) + 2;
  const attention = new Set(paths.map((p) => /^up_blocks\.(\d+)\.attentions\./.exec(p)?.[1]).filter((i): i is string => i !== undefined).map(Number));
  const layout: Layout = { n, upHasAttention: (i) => attention.has(i) };
  for (const path of paths) {
    const ldm = ldmPath(path, layout);
    if (ldm !== undefined) aliases.set(ldm.replace(/\./g, '_'), path);
  }
  return aliases;
}

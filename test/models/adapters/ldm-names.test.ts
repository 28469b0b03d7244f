import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ldmAliases } from '../../../models/adapters/ldm-names.ts';

/** Module paths of a UNet's patchable nodes, for `blocks` down blocks of 2 resnets (attentions where given). */
function unetPaths(attention: readonly boolean[], upAttention: readonly boolean[]): string[] {
  const paths = ['conv_in', 'time_embedding.linear_1', 'time_embedding.linear_2', 'conv_out', 'mid_block.resnets.0.conv1', 'mid_block.resnets.1.conv2', 'mid_block.attentions.0.proj_in'];
  attention.forEach((attn, i) => {
    for (const j of [0, 1]) {
      paths.push(`down_blocks.${i}.resnets.${j}.conv1`, `down_blocks.${i}.resnets.${j}.time_emb_proj`);
      if (attn) paths.push(`down_blocks.${i}.attentions.${j}.transformer_blocks.0.attn1.to_q`);
    }
    if (i < attention.length - 1) paths.push(`down_blocks.${i}.downsamplers.0.conv`);
  });
  upAttention.forEach((attn, i) => {
    for (const j of [0, 1, 2]) {
      paths.push(`up_blocks.${i}.resnets.${j}.conv2`);
      if (attn) paths.push(`up_blocks.${i}.attentions.${j}.proj_out`);
    }
    if (i < upAttention.length - 1) paths.push(`up_blocks.${i}.upsamplers.0.conv`);
  });
  return paths;
}

test('LDM names (kohya SDXL LoRAs) map onto SDXL UNet modules: 3 blocks, no attention in the first down and last up block', () => {
  const aliases = ldmAliases([...unetPaths([false, true, true], [true, true, false]), 'add_embedding.linear_1']);
  const expect = (ldm: string, path: string) => assert.equal(aliases.get(ldm), path, ldm);
  expect('input_blocks_0_0', 'conv_in');
  expect('time_embed_0', 'time_embedding.linear_1');
  expect('label_emb_0_0', 'add_embedding.linear_1');
  expect('input_blocks_1_0_in_layers_2', 'down_blocks.0.resnets.0.conv1');
  expect('input_blocks_2_0_emb_layers_1', 'down_blocks.0.resnets.1.time_emb_proj');
  expect('input_blocks_3_0_op', 'down_blocks.0.downsamplers.0.conv');
  expect('input_blocks_4_1_transformer_blocks_0_attn1_to_q', 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q');
  expect('input_blocks_8_1_transformer_blocks_0_attn1_to_q', 'down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q');
  expect('middle_block_0_in_layers_2', 'mid_block.resnets.0.conv1');
  expect('middle_block_1_proj_in', 'mid_block.attentions.0.proj_in');
  expect('middle_block_2_out_layers_3', 'mid_block.resnets.1.conv2');
  expect('output_blocks_0_0_out_layers_3', 'up_blocks.0.resnets.0.conv2');
  expect('output_blocks_2_1_proj_out', 'up_blocks.0.attentions.2.proj_out');
  expect('output_blocks_2_2_conv', 'up_blocks.0.upsamplers.0.conv'); // after the attention: index 2
  expect('output_blocks_5_2_conv', 'up_blocks.1.upsamplers.0.conv');
  expect('output_blocks_8_0_out_layers_3', 'up_blocks.2.resnets.2.conv2');
  expect('out_2', 'conv_out');
});

test('LDM names map onto SD 1.x/2.x UNets too (4 blocks; the first up block has no attention)', () => {
  const aliases = ldmAliases(unetPaths([true, true, true, false], [false, true, true, true]));
  assert.equal(aliases.get('input_blocks_1_1_transformer_blocks_0_attn1_to_q'), 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q');
  assert.equal(aliases.get('input_blocks_11_0_in_layers_2'), 'down_blocks.3.resnets.1.conv1');
  assert.equal(aliases.get('output_blocks_2_1_conv'), 'up_blocks.0.upsamplers.0.conv', 'no attention before it: index 1');
  assert.equal(aliases.get('output_blocks_5_2_conv'), 'up_blocks.1.upsamplers.0.conv');
  assert.equal(aliases.get('output_blocks_11_1_proj_out'), 'up_blocks.3.attentions.2.proj_out');
});

test('a graph without UNet blocks (a text encoder) has no LDM names', () => {
  assert.equal(ldmAliases(['text_model.encoder.layers.0.self_attn.q_proj', 'text_model.encoder.layers.0.mlp.fc1']).size, 0);
});

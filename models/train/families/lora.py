"""kohya-format LoRA files for the family packs, and the same LoRA merged into the torch modules for reference
outputs. Keys as kohya's sd-scripts writes them:
  lora_unet_<diffusers module path with _>        SD 1.x / 2.x   (lora_unet_down_blocks_0_attentions_0_proj_in)
  lora_unet_<LDM module path with _>              SDXL           (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q)
  lora_te_ / lora_te1_ / lora_te2_ + text_model_encoder_layers_0_self_attn_q_proj (text encoders)
  .lora_down.weight [r, in] or [r, in, kh, kw] (conv LoRA), .lora_up.weight [out, r] or [out, r, 1, 1], .alpha
Tensors are stored as F16, as sd-scripts saves them by default; dW = up @ down * alpha / r * weight.
"""
import json
import struct

import numpy as np
import torch

# What the LoRA touches: attention and feed-forward linears, proj_in/out, and (conv LoRA, "LoCon") the resnets'
# 3x3 convs and time projections; in text encoders the attention and MLP linears.
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2", "time_emb_proj")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_path(path, config):
    """diffusers UNet module path -> the LDM/SGM path SDXL checkpoints and kohya's SDXL LoRAs use."""
    n = config["layers_per_block"] + 1
    parts = path.split(".")
    if parts[0] == "down_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "downsamplers":
            return f"input_blocks.{(i + 1) * n}.0.op"
        block = 1 + i * n + j
        return f"input_blocks.{block}.0.{RESNET[rest[0]]}" if kind == "resnets" else ".".join([f"input_blocks.{block}.1"] + rest)
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        return f"middle_block.{2 * j}.{RESNET[rest[0]]}" if kind == "resnets" else ".".join(["middle_block.1"] + rest)
    if parts[0] == "up_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "upsamplers":
            has_attention = config["up_block_types"][i].startswith("CrossAttn")
            return f"output_blocks.{i * n + n - 1}.{2 if has_attention else 1}.conv"
        block = i * n + j
        return f"output_blocks.{block}.0.{RESNET[rest[0]]}" if kind == "resnets" else ".".join([f"output_blocks.{block}.1"] + rest)
    raise ValueError(f"no LDM name for {path}")


def targets(model, names):
    return [(path, m) for path, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and path.endswith(names)]


def make_lora(model, prefix, names, rank, seed, key_of=lambda p: p, strength=0.5):
    """Random LoRA pairs for every target; up is not zero (a fresh kohya LoRA's is) so the merge changes outputs."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, m in targets(model, names):
        key = prefix + key_of(path).replace(".", "_")
        w = m.weight
        inn = w.shape[1]
        if isinstance(m, torch.nn.Conv2d):
            down = torch.randn(rank, inn, *w.shape[2:], generator=g) / np.sqrt(w[0].numel())
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g) * strength / np.sqrt(rank)
        else:
            down = torch.randn(rank, inn, generator=g) / np.sqrt(inn)
            up = torch.randn(w.shape[0], rank, generator=g) * strength / np.sqrt(rank)
        tensors[key + ".lora_down.weight"] = down.numpy().astype(np.float16)
        tensors[key + ".lora_up.weight"] = up.numpy().astype(np.float16)
        tensors[key + ".alpha"] = np.array(rank / 2, np.float16)  # alpha != rank: the scale alpha / r matters
    return tensors


def merge_lora(model, tensors, prefix, weight, key_of=lambda p: p, round_fp16=False):
    """W += weight * alpha / r * up @ down for every target the file has (float64, then rounded as the pack stores W)."""
    with torch.no_grad():
        for path, m in targets(model, UNET_TARGETS + TEXT_TARGETS):
            key = prefix + key_of(path).replace(".", "_")
            if key + ".lora_down.weight" not in tensors:
                continue
            down = torch.from_numpy(tensors[key + ".lora_down.weight"].astype(np.float64))
            up = torch.from_numpy(tensors[key + ".lora_up.weight"].astype(np.float64))
            r = down.shape[0]
            scale = weight * float(tensors[key + ".alpha"]) / r
            dw = (up.reshape(up.shape[0], r) @ down.reshape(r, -1)).reshape(m.weight.shape) * scale
            merged = m.weight.double() + dw
            m.weight.copy_(merged.half().float() if round_fp16 else merged.float())


def round_to_fp16(model):
    """The weights an fp16 pack holds."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype("float16"): "F16", np.dtype("float32"): "F32"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

"""diffusers' UNet2DConditionModel with its module paths (down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q,
resnets.0.conv1, downsamplers.0.conv, add_embedding.linear_1 ...), written here because diffusers is not installed.
The config dict uses diffusers' keys and meanings, including its historical quirk: `attention_head_dim` is the
number of heads per block (head width = channels / heads), so SD 1.5's 8 and SD 2.1's [5, 10, 20, 20] mean what
they mean in the real config files. Covers what SD 1.x, SD 2.x / Turbo, SDXL / Turbo and LCM-distilled UNets use:
conv or linear proj_in/out, transformer depth per block, `text_time` added conditions (text_embeds, time_ids)
and `time_cond_proj_dim` (LCM's guidance embedding, input timestep_cond).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, flip_sin_to_cos=True, shift=0.0, max_period=10000):
    """diffusers' get_timestep_embedding: [N] -> [N, dim] sinusoids."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - shift)
    args = t[:, None].float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if flip_sin_to_cos else emb


class Timesteps(nn.Module):
    def __init__(self, dim, flip_sin_to_cos, shift):
        super().__init__()
        self.dim, self.flip, self.shift = dim, flip_sin_to_cos, shift

    def forward(self, t):
        return timestep_embedding(t, self.dim, self.flip, self.shift)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout, cond_proj_dim=None):
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.cond_proj = nn.Linear(cond_proj_dim, cin, bias=False) if cond_proj_dim else None
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x, condition=None):
        if condition is not None:
            x = x + self.cond_proj(condition)
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """diffusers' Attention (AttnProcessor): to_q/to_k/to_v, to_out = [Linear, Dropout]."""

    def __init__(self, dim, ctx_dim, heads, head_dim, bias=False):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(ctx_dim, inner, bias=bias)
        self.to_v = nn.Linear(ctx_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, _ = x.shape
        m = ctx.shape[1]
        q = self.to_q(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, h, n, d]
        k = self.to_k(ctx).reshape(b, m, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(ctx).reshape(b, m, self.heads, self.head_dim).transpose(1, 2)
        w = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5  # [B, h, n, m]
        o = torch.matmul(w.softmax(-1), v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](o))


class GEGLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Linear(cin, cout * 2)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads, head_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, ctx_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, ch, ctx_dim, heads, depth, groups, linear_projection):
        super().__init__()
        self.linear = linear_projection
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, ch) if linear_projection else nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, ctx_dim, heads, ch // heads) for _ in range(depth)])
        self.proj_out = nn.Linear(ch, ch) if linear_projection else nn.Conv2d(ch, ch, 1)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if self.linear:
            x = self.proj_in(x.permute(0, 2, 3, 1).reshape(b, h * w, c))  # [B, hw, C]
        else:
            x = self.proj_in(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            x = block(x, ctx)
        if self.linear:
            x = self.proj_out(x).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            x = self.proj_out(x.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return x + residual


class Downsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (with attentions) or DownBlock2D."""

    def __init__(self, cin, cout, temb, c, heads, depth, attn, add_downsample):
        super().__init__()
        layers = c["layers_per_block"]
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, c["norm_num_groups"], c["norm_eps"]) for i in range(layers)])
        if attn:
            self.attentions = nn.ModuleList([Transformer2DModel(cout, c["cross_attention_dim"], heads, depth, c["norm_num_groups"], c["use_linear_projection"]) for _ in range(layers)])
        else:
            self.attentions = None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x, temb, ctx):
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D or UpBlock2D: layers_per_block + 1 resnets on [x ; skip]."""

    def __init__(self, cin, cout, prev, temb, c, heads, depth, attn, add_upsample):
        super().__init__()
        n = c["layers_per_block"] + 1
        groups, eps = c["norm_num_groups"], c["norm_eps"]
        self.resnets = nn.ModuleList([ResnetBlock2D((prev if i == 0 else cout) + (cin if i == n - 1 else cout), cout, temb, groups, eps) for i in range(n)])
        if attn:
            self.attentions = nn.ModuleList([Transformer2DModel(cout, c["cross_attention_dim"], heads, depth, groups, c["use_linear_projection"]) for _ in range(n)])
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x, skips, temb, ctx):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips[-1 - i]], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, ch, temb, c, heads, depth):
        super().__init__()
        groups, eps = c["norm_num_groups"], c["norm_eps"]
        self.attentions = nn.ModuleList([Transformer2DModel(ch, c["cross_attention_dim"], heads, depth, groups, c["use_linear_projection"])])
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb, groups, eps), ResnetBlock2D(ch, ch, temb, groups, eps)])

    def forward(self, x, temb, ctx):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, ctx), temb)


def per_block(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


class UNet2DConditionModel(nn.Module):
    """sample [B, 4, h, w], timestep, encoder_hidden_states [B, 77, D] (+ text_embeds [B, P], time_ids [B, 6] for
    text_time; + timestep_cond [B, time_cond_proj_dim] for LCM) -> noise prediction [B, 4, h, w]."""

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        ch = c["block_out_channels"]
        n = len(ch)
        heads = per_block(c["attention_head_dim"], n)  # diffusers: "attention_head_dim" = heads per block
        depth = per_block(c.get("transformer_layers_per_block", 1), n)
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(c["in_channels"], ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0], c["flip_sin_to_cos"], c["freq_shift"])
        self.time_embedding = TimestepEmbedding(ch[0], temb, c.get("time_cond_proj_dim"))
        if c.get("addition_embed_type") == "text_time":
            self.add_time_proj = Timesteps(c["addition_time_embed_dim"], c["flip_sin_to_cos"], c["freq_shift"])
            self.add_embedding = TimestepEmbedding(c["projection_class_embeddings_input_dim"], temb)
        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(c["down_block_types"]):
            cin, out = out, ch[i]
            self.down_blocks.append(DownBlock(cin, out, temb, c, heads[i], depth[i], kind.startswith("CrossAttn"), i < n - 1))
        self.mid_block = UNetMidBlock2DCrossAttn(ch[-1], temb, c, heads[-1], depth[-1])
        self.up_blocks = nn.ModuleList()
        rch, rheads, rdepth = ch[::-1], heads[::-1], depth[::-1]
        out = rch[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out = out, rch[i]
            cin = rch[min(i + 1, n - 1)]
            self.up_blocks.append(UpBlock(cin, out, prev, temb, c, rheads[i], rdepth[i], kind.startswith("CrossAttn"), i < n - 1))
        self.conv_norm_out = nn.GroupNorm(c["norm_num_groups"], ch[0], eps=c["norm_eps"])
        self.conv_out = nn.Conv2d(ch[0], c["out_channels"], 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None, timestep_cond=None):
        # 1. time: a scalar or per-row timestep, broadcast to the batch
        t = timestep.reshape(-1).float().expand(sample.shape[0]) if timestep.dim() == 0 else timestep.float()
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype), timestep_cond)
        if text_embeds is not None:  # SDXL micro-conditioning: pooled text + (original size, crop, target size)
            time_embeds = self.add_time_proj(time_ids.flatten()).reshape(text_embeds.shape[0], -1)
            emb = emb + self.add_embedding(torch.cat([text_embeds, time_embeds.to(emb.dtype)], dim=-1))
        # 2. down, 3. mid, 4. up with skip connections
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, states = block(x, emb, encoder_hidden_states)
            skips += states
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            k = len(block.resnets)
            x = block(x, skips[-k:], emb, encoder_hidden_states)
            skips = skips[:-k]
        # 5. out
        return self.conv_out(F.silu(self.conv_norm_out(x)))


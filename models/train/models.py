"""Model definitions for the tiny-shapes pack (module names follow diffusers / transformers
so that torch.onnx.export produces node names like
/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------- text encoder (CLIP-like)


class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, mask):
        b, n, d = x.shape
        h = self.heads
        q = self.q_proj(x).reshape(b, n, h, d // h).transpose(1, 2)
        k = self.k_proj(x).reshape(b, n, h, d // h).transpose(1, 2)
        v = self.v_proj(x).reshape(b, n, h, d // h).transpose(1, 2)
        w = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h)) + mask
        o = torch.matmul(w.softmax(-1), v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(o)


class ClipMLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # quick_gelu as CLIP


class ClipLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d)
        self.self_attn = ClipAttention(d, heads)
        self.layer_norm2 = nn.LayerNorm(d)
        self.mlp = ClipMLP(d)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, vocab, d, n_pos):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(n_pos, d)
        self.register_buffer("position_ids", torch.arange(n_pos)[None], persistent=False)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(self.position_ids[:, : ids.shape[1]])


class ClipEncoder(nn.Module):
    def __init__(self, d, heads, layers):
        super().__init__()
        self.layers = nn.ModuleList([ClipLayer(d, heads) for _ in range(layers)])

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class ClipTextTransformer(nn.Module):
    def __init__(self, vocab, d, heads, layers, n_pos):
        super().__init__()
        self.embeddings = ClipEmbeddings(vocab, d, n_pos)
        self.encoder = ClipEncoder(d, heads, layers)
        self.final_layer_norm = nn.LayerNorm(d)
        mask = torch.full((n_pos, n_pos), -1e4).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, ids):
        n = ids.shape[1]
        x = self.embeddings(ids)
        mask = self.causal_mask[:n, :n]
        x = self.encoder(x, mask)
        x = self.final_layer_norm(x)
        eos = ids.argmax(-1)  # EOS has the largest id (as CLIP); first occurrence
        idx = eos[:, None, None].expand(-1, 1, x.shape[2])
        pooled = x.gather(1, idx)[:, 0]
        return x, pooled


class TextEncoder(nn.Module):
    """input_ids [B,77] -> (last_hidden_state [B,77,D], pooler_output [B,D])."""

    def __init__(self, vocab_size, hidden_size=64, heads=2, layers=2, max_position_embeddings=77):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_attention_heads=heads,
                           num_hidden_layers=layers, max_position_embeddings=max_position_embeddings,
                           intermediate_size=4 * hidden_size, hidden_act="quick_gelu")
        self.text_model = ClipTextTransformer(vocab_size, hidden_size, heads, layers, max_position_embeddings)

    def forward(self, input_ids):
        return self.text_model(input_ids.long())


# ----------------------------------------------------------------- VAE


class VaeResnet(nn.Module):
    def __init__(self, cin, cout, groups=8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VaeDownBlock(nn.Module):
    def __init__(self, cin, c, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList([VaeResnet(cin, c, groups)])
        self.downsamplers = nn.ModuleList([Downsample(c, c)]) if downsample else nn.ModuleList()

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        for d in self.downsamplers:
            x = d(x)
        return x


class VaeUpBlock(nn.Module):
    def __init__(self, cin, c, groups, up_out):
        super().__init__()
        self.resnets = nn.ModuleList([VaeResnet(cin, c, groups)])
        self.upsamplers = nn.ModuleList([Upsample(c, up_out)]) if up_out else nn.ModuleList()

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        for u in self.upsamplers:
            x = u(x)
        return x


class VaeEncoder(nn.Module):
    """[B,3,H,W] in [-1,1] -> moments [B,8,H/8,W/8] (mean, logvar).
    First stage is a 2x space-to-depth (pixel unshuffle) so no conv runs at full resolution."""

    def __init__(self, ch=(32, 48, 64), latent=4, groups=8):
        super().__init__()
        self.conv_in = nn.Conv2d(12, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        cin = ch[0]
        for i, c in enumerate(ch):
            self.down_blocks.append(VaeDownBlock(cin, c, groups, i < len(ch) - 1))
            cin = c
        self.mid_block = VaeResnet(cin, cin, groups)
        self.conv_norm_out = nn.GroupNorm(groups, cin)
        self.conv_out = nn.Conv2d(cin, 2 * latent, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(F.pixel_unshuffle(x, 2))
        for blk in self.down_blocks:
            x = blk(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VaeDecoder(nn.Module):
    """latents [B,4,h,w] (unscaled) -> image [B,3,8h,8w] in ~[-1,1]. Nearest upsample + conv,
    last 2x by depth-to-space (pixel shuffle)."""

    def __init__(self, ch=(32, 48, 64), latent=4, groups=8):
        super().__init__()
        ch = list(reversed(ch))
        self.conv_in = nn.Conv2d(latent, ch[0], 3, padding=1)
        self.mid_block = VaeResnet(ch[0], ch[0], groups)
        self.up_blocks = nn.ModuleList()
        cin = ch[0]
        for i, c in enumerate(ch):
            self.up_blocks.append(VaeUpBlock(cin, c, groups, ch[i + 1] if i < len(ch) - 1 else 0))
            cin = ch[i + 1] if i < len(ch) - 1 else c
        self.conv_norm_out = nn.GroupNorm(groups, cin)
        self.conv_out = nn.Conv2d(cin, 12, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for blk in self.up_blocks:
            x = blk(x)
        return F.pixel_shuffle(self.conv_out(F.silu(self.conv_norm_out(x))), 2)


class VAE(nn.Module):
    def __init__(self, ch=(32, 48, 64), latent=4, groups=8):
        super().__init__()
        self.cfg = dict(ch=list(ch), latent=latent, groups=groups)
        self.latent = latent
        self.encoder = VaeEncoder(ch, latent, groups)
        self.decoder = VaeDecoder(ch, latent, groups)
        self.mode = "encode_mean"  # export mode: encode_mean | encode_parameters | decode

    def forward(self, x):
        if self.mode == "decode":
            return self.decoder(x)
        m = self.encoder(x)
        if self.mode == "encode_parameters":
            return m
        return m[:, : self.latent]


# ----------------------------------------------------------------- tiny VAE (TAESD-style)


class TinyBlock(nn.Module):
    """TAESD's residual block: conv-ReLU-conv + skip, ReLU (no norms: only Conv/Relu/Add in the graph)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class TinyVaeEncoder(nn.Module):
    """[B,3,H,W] in [-1,1] -> latents [B,4,H/8,W/8] already multiplied by the pack's scaling factor (TAESD's
    contract: scale factor 1). Space-to-depth instead of full-resolution convs: 4x unshuffle to H/4 (48 ch),
    convs at H/4, 2x unshuffle to H/8, convs at H/8. Channel counts are multiples of 16 (ORT pads conv kernels)."""

    def __init__(self, c1=32, c2=64, latent=4, blocks1=1, blocks2=1):
        super().__init__()
        self.cfg = dict(c1=c1, c2=c2, latent=latent, blocks1=blocks1, blocks2=blocks2)
        self.conv_in = nn.Conv2d(48, c1, 3, padding=1)
        self.blocks1 = nn.Sequential(*[TinyBlock(c1) for _ in range(blocks1)])
        self.down = nn.Conv2d(4 * c1, c2, 3, padding=1)
        self.blocks2 = nn.Sequential(*[TinyBlock(c2) for _ in range(blocks2)])
        self.conv_out = nn.Conv2d(c2, latent, 3, padding=1)

    def forward(self, x):
        x = self.blocks1(F.relu(self.conv_in(F.pixel_unshuffle(x, 4))))  # [B,c1,H/4,W/4]
        x = self.blocks2(F.relu(self.down(F.pixel_unshuffle(x, 2))))  # [B,c2,H/8,W/8]
        return self.conv_out(x)


class TinyVaeDecoder(nn.Module):
    """Scaled latents [B,4,h,w] -> image [B,3,8h,8w] in ~[-1,1]: convs at h, 2x depth-to-space, convs at 2h,
    4x depth-to-space to 8h (no full-resolution conv). Input soft-clamped like TAESD (tanh(z/3)*3)."""

    def __init__(self, c1=32, c2=64, latent=4, blocks1=1, blocks2=1):
        super().__init__()
        self.cfg = dict(c1=c1, c2=c2, latent=latent, blocks1=blocks1, blocks2=blocks2)
        self.conv_in = nn.Conv2d(latent, c2, 3, padding=1)
        self.blocks2 = nn.Sequential(*[TinyBlock(c2) for _ in range(blocks2)])
        self.up = nn.Conv2d(c2, 4 * c1, 3, padding=1)
        self.blocks1 = nn.Sequential(*[TinyBlock(c1) for _ in range(blocks1)])
        self.conv_out = nn.Conv2d(c1, 48, 3, padding=1)

    def forward(self, z):
        x = self.blocks2(F.relu(self.conv_in(torch.tanh(z / 3) * 3)))  # [B,c2,h,w]
        x = self.blocks1(F.relu(F.pixel_shuffle(self.up(x), 2)))  # [B,c1,2h,2w]
        return F.pixel_shuffle(self.conv_out(x), 4)  # [B,3,8h,8w]


# ----------------------------------------------------------------- UNet (UNet2DCondition-like)


def timestep_embedding(t, dim, max_period=10000.0):
    # diffusers get_timestep_embedding with flip_sin_to_cos=True, downscale_freq_shift=0
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Timesteps(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    def __init__(self, dim, ctx_dim, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(ctx_dim, inner, bias=False)
        self.to_v = nn.Linear(ctx_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, _ = x.shape
        m = ctx.shape[1]
        h, d = self.heads, self.head_dim
        q = self.to_q(x).reshape(b, n, h, d).transpose(1, 2)
        k = self.to_k(ctx).reshape(b, m, h, d).transpose(1, 2)
        v = self.to_v(ctx).reshape(b, m, h, d).transpose(1, 2)
        w = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        o = torch.matmul(w.softmax(-1), v).transpose(1, 2).reshape(b, n, h * d)
        return self.to_out[0](o)


class GEGLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Linear(cin, cout * 2)

    def forward(self, x):
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

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
    def __init__(self, ch, ctx_dim, head_dim, groups):
        super().__init__()
        heads = ch // head_dim
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, ch)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, ctx_dim, heads, head_dim)])
        self.proj_out = nn.Linear(ch, ch)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        res = x
        x = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        x = self.proj_in(x)
        for blk in self.transformer_blocks:
            x = blk(x, ctx)
        x = self.proj_out(x)
        return x.transpose(1, 2).reshape(b, c, h, w) + res


class DownBlock2D(nn.Module):
    """CrossAttnDownBlock2D (with attentions) or DownBlock2D (without)."""

    def __init__(self, cin, c, temb, groups, layers, attn, ctx_dim, head_dim, downsample):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for j in range(layers):
            self.resnets.append(ResnetBlock2D(cin if j == 0 else c, c, temb, groups))
            if attn:
                self.attentions.append(Transformer2DModel(c, ctx_dim, head_dim, groups))
        self.downsamplers = nn.ModuleList([Downsample(c, c)]) if downsample else nn.ModuleList()

    def forward(self, x, emb, ctx):
        skips = []
        for j, r in enumerate(self.resnets):
            x = r(x, emb)
            if len(self.attentions):
                x = self.attentions[j](x, ctx)
            skips.append(x)
        for d in self.downsamplers:
            x = d(x)
            skips.append(x)
        return x, skips


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, c, temb, groups, ctx_dim, head_dim):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb, groups), ResnetBlock2D(c, c, temb, groups)])
        self.attentions = nn.ModuleList([Transformer2DModel(c, ctx_dim, head_dim, groups)])

    def forward(self, x, emb, ctx):
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, ctx)
        return self.resnets[1](x, emb)


class UpBlock2D(nn.Module):
    """CrossAttnUpBlock2D (with attentions) or UpBlock2D; skip concatenation."""

    def __init__(self, cin, c, skip_chs, temb, groups, attn, ctx_dim, head_dim, upsample):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for j, s in enumerate(skip_chs):
            self.resnets.append(ResnetBlock2D((cin if j == 0 else c) + s, c, temb, groups))
            if attn:
                self.attentions.append(Transformer2DModel(c, ctx_dim, head_dim, groups))
        self.upsamplers = nn.ModuleList([Upsample(c, c)]) if upsample else nn.ModuleList()

    def forward(self, x, skips, emb, ctx):
        for j, r in enumerate(self.resnets):
            x = r(torch.cat([x, skips[-1 - j]], dim=1), emb)
            if len(self.attentions):
                x = self.attentions[j](x, ctx)
        for u in self.upsamplers:
            x = u(x)
        return x


class UNet(nn.Module):
    """sample [B,4,h,w], timestep [B], encoder_hidden_states [B,77,D] -> eps [B,4,h,w].
    h and w must be multiples of 2**(len(block_out_channels)-1)."""

    def __init__(self, in_channels=4, block_out_channels=(32, 64, 64), cross_attention_dim=64,
                 head_dim=16, groups=8, layers_per_block=1, attn_blocks=(False, True, True), time_dim=None):
        super().__init__()
        ch = list(block_out_channels)
        attn_blocks = list(attn_blocks)[: len(ch)]
        temb = time_dim or ch[0] * 4
        self.config = dict(in_channels=in_channels, out_channels=in_channels, block_out_channels=ch,
                           cross_attention_dim=cross_attention_dim, attention_head_dim=head_dim,
                           num_attention_heads=[c // head_dim for c in ch], norm_num_groups=groups,
                           layers_per_block=layers_per_block,
                           down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn_blocks],
                           up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn_blocks)],
                           mid_block_type="UNetMidBlock2DCrossAttn", time_embedding_dim=temb,
                           flip_sin_to_cos=True, freq_shift=0)
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0])
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        skip_ch = [ch[0]]
        cin = ch[0]
        n = len(ch)
        for i, c in enumerate(ch):
            self.down_blocks.append(DownBlock2D(cin, c, temb, groups, layers_per_block, attn_blocks[i],
                                                cross_attention_dim, head_dim, i < n - 1))
            skip_ch += [c] * layers_per_block + ([c] if i < n - 1 else [])
            cin = c
        self.mid_block = UNetMidBlock2DCrossAttn(cin, temb, groups, cross_attention_dim, head_dim)
        self.up_blocks = nn.ModuleList()
        rch = list(reversed(ch))
        rattn = list(reversed(attn_blocks))
        for i, c in enumerate(rch):
            skips = [skip_ch.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(UpBlock2D(cin, c, skips, temb, groups, rattn[i], cross_attention_dim, head_dim, i < n - 1))
            cin = c
        self.conv_norm_out = nn.GroupNorm(groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], in_channels, 3, padding=1)

    io_half = False

    def forward(self, sample, timestep, encoder_hidden_states):
        out_dtype = sample.dtype
        sample = sample.float()
        encoder_hidden_states = encoder_hidden_states.float()
        timestep = timestep.float()
        if timestep.dim() == 0:  # scalar timestep variant: same t for every row
            timestep = timestep.reshape(1).expand(sample.shape[0])
        out = self._forward(sample, timestep, encoder_hidden_states)
        return out.to(out_dtype)

    def _forward(self, sample, timestep, encoder_hidden_states):
        emb = self.time_embedding(self.time_proj(timestep))
        ctx = encoder_hidden_states
        x = self.conv_in(sample)
        skips = [x]
        for blk in self.down_blocks:
            x, s = blk(x, emb, ctx)
            skips += s
        x = self.mid_block(x, emb, ctx)
        for blk in self.up_blocks:
            k = len(blk.resnets)
            x = blk(x, skips[-k:], emb, ctx)
            skips = skips[:-k]
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# ----------------------------------------------------------------- schedule

def warmup_cosine(step, progress, warmup_steps, floor):
    """Learning-rate factor of the training scripts here: linear warm-up over warmup_steps (0: none), then a cosine
    from 1 down to `floor` as progress (steps or wall time, whichever is further along) goes from 0 to 1."""
    warm = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def alphas_cumprod(n=1000, beta_start=0.00085, beta_end=0.012):
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def lcm_timesteps(steps, original=50, n_train=1000):
    """StreamDiffusion / LCM 'leading' grid: 999 - 20 i; `steps` evenly spaced indices."""
    grid = [n_train - 1 - (n_train // original) * i for i in range(original)]
    if steps == 1:
        return [grid[0]]
    idx = [(i * original) // steps for i in range(steps)]
    return [grid[i] for i in idx]


def count_params(m):
    return sum(p.numel() for p in m.parameters())


MAIN_CONFIG = dict(
    text=dict(hidden_size=64, heads=2, layers=2),
    vae=dict(ch=(32, 48, 64), latent=4, groups=8),
    unet=dict(block_out_channels=(32, 48, 64), cross_attention_dim=64, head_dim=16, groups=8),
)
FIXTURE_CONFIG = dict(
    text=dict(hidden_size=8, heads=2, layers=2),
    vae=dict(ch=(8, 8, 8), latent=4, groups=4),
    unet=dict(block_out_channels=(8, 8), cross_attention_dim=8, head_dim=4, groups=4, time_dim=16),
)

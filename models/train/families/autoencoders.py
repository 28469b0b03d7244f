"""diffusers' AutoencoderKL (SD's VAE) and AutoencoderTiny (TAESD) with their module paths, written here because
diffusers is not installed.

AutoencoderKL: encoder.down_blocks.N.resnets.M / downsamplers.0.conv, encoder.mid_block.attentions.0.to_q ...,
quant_conv, post_quant_conv, decoder.up_blocks.N (layers_per_block + 1 resnets, upsamplers.0.conv).
AutoencoderTiny: encoder.layers.N / decoder.layers.N (convs, ReLU and 3-conv residual blocks; the decoder clamps
its input with 3 tanh(x / 3)); images in [-1, 1] like AutoencoderKL, latents already scaled (factor 1.0).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from unet_2d_condition import ResnetBlock2D


class VaeAttention(nn.Module):
    """The mid-block self-attention: one head over all pixels, GroupNorm first, residual added."""

    def __init__(self, ch, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.to_q = nn.Linear(ch, ch)
        self.to_k = nn.Linear(ch, ch)
        self.to_v = nn.Linear(ch, ch)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # [B, hw, C]
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        a = torch.matmul(q, k.transpose(1, 2)) * c ** -0.5
        o = self.to_out[0](torch.matmul(a.softmax(-1), v))
        return o.transpose(1, 2).reshape(b, c, h, w) + x


class UNetMidBlock2D(nn.Module):
    def __init__(self, ch, groups):
        super().__init__()
        self.attentions = nn.ModuleList([VaeAttention(ch, groups)])
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, None, groups, 1e-6), ResnetBlock2D(ch, ch, None, groups, 1e-6)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class VaeDownsample(nn.Module):
    """Stride-2 conv without padding after a (0, 1, 0, 1) pad, as the VAE does it."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VaeUpsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, groups, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, None, groups, 1e-6) for i in range(layers)])
        self.downsamplers = nn.ModuleList([VaeDownsample(cout)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return self.downsamplers[0](x) if self.downsamplers is not None else x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, groups, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, None, groups, 1e-6) for i in range(layers)])
        self.upsamplers = nn.ModuleList([VaeUpsample(cout)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, groups = c["block_out_channels"], c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["in_channels"], ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], c["layers_per_block"], groups, i < len(ch) - 1) for i in range(len(ch))])
        self.mid_block = UNetMidBlock2D(ch[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * c["latent_channels"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, groups = c["block_out_channels"][::-1], c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["latent_channels"], ch[0], 3, padding=1)
        self.mid_block = UNetMidBlock2D(ch[0], groups)
        self.up_blocks = nn.ModuleList([UpDecoderBlock2D(ch[max(i - 1, 0)], ch[i], c["layers_per_block"] + 1, groups, i < len(ch) - 1) for i in range(len(ch))])
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], c["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """`mode` picks what forward() exports: latent_parameters (mean ; logvar), latent_sample (a draw from the
    posterior, as the diffusers script and optimum < 1.24 export it: RandomNormalLike in the graph) or decode."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        L = config["latent_channels"]
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1)
        self.post_quant_conv = nn.Conv2d(L, L, 1)
        self.decoder = Decoder(config)
        self.mode = "latent_parameters"

    def forward(self, x):
        if self.mode == "decode":
            return self.decoder(self.post_quant_conv(x))
        moments = self.quant_conv(self.encoder(x))  # [B, 2L, H/8, W/8]
        if self.mode == "latent_parameters":
            return moments
        mean, logvar = torch.chunk(moments, 2, dim=1)
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        return mean + std * torch.randn_like(mean)


class TaesdBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


class TaesdClamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


def taesd_encoder_layers(c, L):
    layers = [nn.Conv2d(3, c, 3, padding=1), TaesdBlock(c, c)]
    for _ in range(3):
        layers += [nn.Conv2d(c, c, 3, padding=1, stride=2, bias=False), TaesdBlock(c, c), TaesdBlock(c, c), TaesdBlock(c, c)]
    return nn.Sequential(*layers, nn.Conv2d(c, L, 3, padding=1))


def taesd_decoder_layers(c, L):
    layers = [TaesdClamp(), nn.Conv2d(L, c, 3, padding=1), nn.ReLU()]
    for i in range(3):
        layers += [TaesdBlock(c, c), TaesdBlock(c, c), TaesdBlock(c, c), nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, padding=1, bias=False)]
    return nn.Sequential(*layers, TaesdBlock(c, c), nn.Conv2d(c, 3, 3, padding=1))


class TaesdEncoder(nn.Module):
    def __init__(self, c, L):
        super().__init__()
        self.layers = taesd_encoder_layers(c, L)

    def forward(self, x):
        return self.layers(x.add(1).div(2))  # TAESD works on [0, 1] images


class TaesdDecoder(nn.Module):
    def __init__(self, c, L):
        super().__init__()
        self.layers = taesd_decoder_layers(c, L)

    def forward(self, z):
        return self.layers(z).mul(2).sub(1)


class AutoencoderTiny(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        c, L = config["block_out_channels"][0], config["latent_channels"]
        self.encoder = TaesdEncoder(c, L)
        self.decoder = TaesdDecoder(c, L)
        self.mode = "encode"

    def forward(self, x):
        return self.decoder(x) if self.mode == "decode" else self.encoder(x)


def autoencoder_kl_config(channels, groups, scaling_factor, sample_size):
    return {"_class_name": "AutoencoderKL", "_diffusers_version": "0.25.0", "act_fn": "silu", "in_channels": 3, "out_channels": 3,
            "latent_channels": 4, "block_out_channels": list(channels), "layers_per_block": 2, "norm_num_groups": groups,
            "down_block_types": ["DownEncoderBlock2D"] * len(channels), "up_block_types": ["UpDecoderBlock2D"] * len(channels),
            "sample_size": sample_size, "scaling_factor": scaling_factor, "force_upcast": True}


def autoencoder_tiny_config(channels):
    return {"_class_name": "AutoencoderTiny", "_diffusers_version": "0.25.0", "in_channels": 3, "out_channels": 3,
            "latent_channels": 4, "encoder_block_out_channels": [channels] * 4, "decoder_block_out_channels": [channels] * 4,
            "block_out_channels": [channels] * 4, "num_encoder_blocks": [1, 3, 3, 3], "num_decoder_blocks": [3, 3, 3, 1],
            "act_fn": "relu", "upsampling_scaling_factor": 2, "latent_magnitude": 3, "latent_shift": 0.5, "scaling_factor": 1.0}


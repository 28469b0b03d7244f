"""CLIP text towers with transformers' module paths (CLIPTextModel, CLIPTextModelWithProjection), so an ONNX
export names its nodes /text_model/encoder/layers.0/self_attn/q_proj/MatMul and a kohya key
lora_te_text_model_encoder_layers_0_self_attn_q_proj finds them. Written here (transformers is not installed);
the computation follows transformers' eager CLIP: pre-LN layers, causal mask, final LayerNorm, pooled output at
argmax(input_ids) (the legacy rule for configs whose eos_token_id is 2, as SD's are).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class CLIPAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = d // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, mask):
        b, n, d = x.shape
        split = lambda t: t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, heads, n, hd]
        q = split(self.q_proj(x) * self.scale)
        k = split(self.k_proj(x))
        v = split(self.v_proj(x))
        w = torch.matmul(q, k.transpose(-1, -2)) + mask  # [B, heads, n, n]
        o = torch.matmul(w.softmax(-1), v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(o)


class CLIPMLP(nn.Module):
    def __init__(self, d, inner, act):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(d, inner)
        self.fc2 = nn.Linear(inner, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, d, heads, inner, act, eps):
        super().__init__()
        self.self_attn = CLIPAttention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = CLIPMLP(d, inner, act)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, vocab, d, positions):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(positions, d)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(self.position_ids[:, : ids.shape[-1]])


class CLIPEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = config
        self.layers = nn.ModuleList([CLIPEncoderLayer(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["hidden_act"], c["layer_norm_eps"])
                                     for _ in range(c["num_hidden_layers"])])

    def forward(self, x, mask):
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return x, states


class CLIPTextTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config["hidden_size"]
        self.embeddings = CLIPTextEmbeddings(config["vocab_size"], d, config["max_position_embeddings"])
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(d, eps=config["layer_norm_eps"])

    def forward(self, input_ids):
        ids = input_ids.long()
        n = ids.shape[1]
        x = self.embeddings(ids)  # [B, 77, D]
        mask = torch.full((n, n), torch.finfo(x.dtype).min).triu(1)[None, None]  # causal: no attention to later tokens
        x, states = self.encoder(x, mask)
        last = self.final_layer_norm(x)
        pooled = last[torch.arange(last.shape[0]), ids.argmax(-1)]  # [B, D] at the first EOS (the largest id)
        return last, pooled, states


class CLIPTextModel(nn.Module):
    """input_ids [B, 77] -> last_hidden_state [B, 77, D], pooler_output [B, D], hidden_states (layers + 1)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config)

    def forward(self, input_ids):
        return self.text_model(input_ids)


class CLIPTextModelWithProjection(nn.Module):
    """SDXL's second encoder: pooled output through text_projection (no bias) -> text_embeds [B, projection_dim]."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config)
        self.text_projection = nn.Linear(config["hidden_size"], config["projection_dim"], bias=False)

    def forward(self, input_ids):
        last, pooled, states = self.text_model(input_ids)
        return last, self.text_projection(pooled), states


def clip_config(vocab_size, hidden_size, layers, heads, act, projection_dim=None, intermediate_size=None, pad_token_id=1):
    """transformers' CLIPTextConfig fields (the text_encoder/config.json of a diffusers folder)."""
    config = {
        "architectures": ["CLIPTextModelWithProjection" if projection_dim else "CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 4 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": pad_token_id,
        "projection_dim": projection_dim or hidden_size,
        "torch_dtype": "float32",
    }
    return config


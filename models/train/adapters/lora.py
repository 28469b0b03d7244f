"""Orthogonal adaptation (Po et al. 2024, REFERENCE §3) and plain LoRA for the tiny-shapes UNet, plus the
kohya-format safetensors writer.

dW = (alpha / r) * up @ down, up [out, r], down [r, in].
  orthogonal: down = basis_n[:, block * r : (block + 1) * r].T (frozen), up trained (zero init)
  lora:       down trained (Gaussian rows of unit expected norm, same scale as the basis rows), up trained (zero init)
The shared basis: one orthogonal n x n matrix per layer input size n, Q of the QR decomposition of a
seeded Gaussian (numpy PCG64, seed BASIS_SEED + n), sign-fixed so diag(R) > 0 (unique, reproducible).
"""
import json
import struct

import numpy as np
import torch
import torch.nn as nn

BASIS_SEED = 20240312
BASIS_NAME = "orthogonal-basis"
# Target layer sets. "kv" (default): the cross-attention key/value projections, whose input is the 64-d text
# context, so dW is linear in the text states and only changes the keys/values of the prompt tokens.
# "all": the 12 Linear layers of every transformer block (attention projections, feed-forward, proj_in/out).
TARGET_SETS = {
    "kv": ("attn2.to_k", "attn2.to_v"),
    "all": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
            "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
            "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"),
}
TARGET_SUFFIXES = TARGET_SETS["all"]


def orthogonal_basis(n, seed=BASIS_SEED):
    g = np.random.default_rng(seed + n).standard_normal((n, n))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]
    return q.astype(np.float32)  # columns orthonormal


TEXT_BASIS_LOW = 24  # adapter blocks come from the 24 least-used directions of the base text states
TEXT_BASIS_CAPTIONS = 4096


def text_basis(text_states, low=TEXT_BASIS_LOW, seed=BASIS_SEED):
    """Shared orthogonal basis for layers whose input is the text context (attn2.to_k / to_v), built from the
    *base* model only: text_states [N, 64] of base captions (no concept). Eigenvectors of their second-moment
    matrix, ascending; the `low` least-used directions are mixed by a seeded random rotation (so no block is a
    single eigenvector), then the remaining eigenvectors follow in ascending order. Column blocks of this basis
    are still disjoint and orthonormal (B_i^T B_j = 0); they just sit where base prompts carry little energy."""
    x = np.asarray(text_states, np.float64)
    ev, u = np.linalg.eigh(x.T @ x / len(x))
    rot = np.linalg.qr(np.random.default_rng(seed).standard_normal((low, low)))[0]
    q = np.concatenate([u[:, :low] @ rot, u[:, low:]], axis=1)
    q = q * np.where(q[np.abs(q).argmax(axis=0), np.arange(q.shape[1])] < 0, -1.0, 1.0)[None, :]  # sign-fix columns
    return q.astype(np.float32), ev


def target_modules(unet, targets="all"):
    suffixes = TARGET_SETS[targets]
    out = []
    for name, m in unet.named_modules():
        if isinstance(m, nn.Linear) and ".attentions." in name and name.endswith(suffixes):
            out.append((name, m))
    return out


def kohya_key(module_path):
    return "lora_unet_" + module_path.replace(".", "_")


class LoraLinear(nn.Module):
    def __init__(self, base, rank, alpha, down_init, train_down):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.down = nn.Parameter(torch.as_tensor(down_init).clone().float(), requires_grad=train_down)  # [r, in]
        self.up = nn.Parameter(torch.zeros(base.out_features, rank))  # [out, r]
        self.weight_lambda = 1.0

    def forward(self, x):
        return self.base(x) + (self.scale * self.weight_lambda) * ((x @ self.down.t()) @ self.up.t())


def attach(unet, method, rank, alpha, block, basis_cache, seed, targets="all"):
    """Wraps every target Linear; returns {module_path: LoraLinear}. Base weights are frozen."""
    for p in unet.parameters():
        p.requires_grad_(False)
    gen = np.random.default_rng(seed)
    wrapped = {}
    for name, m in target_modules(unet, targets):
        n = m.in_features
        if method == "orthogonal":
            if (block + 1) * rank > n:
                raise ValueError(f"{name}: block {block} of rank {rank} does not fit input size {n}")
            basis = basis_cache[n] if n in basis_cache else basis_cache.setdefault(n, orthogonal_basis(n))
            down = basis[:, block * rank:(block + 1) * rank].T
            train_down = False
        else:
            down = (gen.standard_normal((rank, n)) / np.sqrt(n)).astype(np.float32)
            train_down = True
        lora = LoraLinear(m, rank, alpha, down, train_down)
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        if isinstance(parent, nn.ModuleList):
            parent[int(child)] = lora
        else:
            setattr(parent, child, lora)
        wrapped[name] = lora
    return wrapped


def write_safetensors(path, tensors, metadata):
    """tensors: {name: float32 np.ndarray}. Format: u64 LE header length, JSON header, raw little-endian data."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # align the data to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"])
    return out, meta


def export_adapter(path, wrapped, rank, alpha, metadata, embeddings=None):
    """embeddings: {trigger word: [n, D]} learned token vectors, stored under A1111's LoRA-bundled embedding
    keys bundle_emb.<word>.string_to_param.* (the prompt word is replaced by these vectors)."""
    tensors = {f"bundle_emb.{word}.string_to_param.*": v for word, v in (embeddings or {}).items()}
    for name, lora in wrapped.items():
        key = kohya_key(name)
        tensors[key + ".lora_down.weight"] = lora.down.detach().numpy()
        tensors[key + ".lora_up.weight"] = lora.up.detach().numpy()
        tensors[key + ".alpha"] = np.array(alpha, np.float32)
    meta = dict(metadata, rank=rank, alpha=alpha, format="kohya", ss_network_dim=rank, ss_network_alpha=alpha)
    write_safetensors(path, tensors, meta)


def export_basis(path, sizes, basis_cache=None, extra_meta=None):
    """The shared basis file: the cached bases (e.g. the text basis) or seeded random ones; extra_meta describes a
    cached basis' construction (default: the random one's)."""
    basis_cache = basis_cache or {}
    tensors = {f"basis.{n}": basis_cache[n] if n in basis_cache else orthogonal_basis(n) for n in sorted(sizes)}
    meta = {"kind": "orthogonal_basis", "seed": BASIS_SEED, "sizes": json.dumps(sorted(sizes))}
    meta.update(extra_meta or {
        "construction": "Q of QR(standard_normal((n, n))) with numpy default_rng(seed + n), columns sign-fixed so diag(R) > 0",
        "usage": "adapter i of rank r uses down = basis.n[:, i*r:(i+1)*r].T on layers of input size n"})
    write_safetensors(path, tensors, meta)

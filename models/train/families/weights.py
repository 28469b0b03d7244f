"""Random weights for the family packs, one rule set for both widths: the reduced packs apply it to torch modules,
the full-width builder streams it straight into ONNX external data (no torch copy of a multi-GB model).
Scales keep activations O(1) through the real depths: unit-variance projections (1/sqrt(fan_in)), residual
branch ends scaled by 0.3 as trained networks have them, norms at 1/0, biases and embeddings small.
"""
import math
import zlib

import numpy as np

BRANCH_ENDS = ("conv2", "proj_out", "to_out", "ff.net.2", "out_proj", "fc2")
EMBEDDINGS = ("token_embedding.weight", "position_embedding.weight")
# A trained SD VAE's posterior log-variance is far below 0: a sampled latent stays near the mean.
LOGVAR_BIAS = -12.0


def initial_value(name, shape, seed, dtype=np.float32):
    """The value of parameter `name` with torch shape `shape` ([out, in, ...] for weights)."""
    rng = np.random.Generator(np.random.PCG64(seed * 1_000_003 + zlib.crc32(name.encode())))
    shape = tuple(shape)
    if "norm" in name and len(shape) == 1:
        v = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
    elif name.endswith(EMBEDDINGS):
        v = rng.standard_normal(shape) * 0.02
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = rng.standard_normal(shape) / math.sqrt(fan_in) * (0.3 if any(s in name for s in BRANCH_ENDS) else 1.0)
    else:
        v = rng.standard_normal(shape) * 0.02
    if name.startswith("quant_conv."):  # posterior log-variance channels (second half of the outputs)
        half = shape[0] // 2
        v[half:] = 0.0 if len(shape) > 1 else LOGVAR_BIAS
    return v.astype(dtype)


def init_module(model, seed):
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(initial_value(name, p.shape, seed)))

"""Shared paths and loaders for the expert scripts (teacher checkpoint, cached latents, experts checkpoint)."""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
sys.path.insert(0, TRAIN)
sys.path.insert(0, HERE)
from clip_tokenizer import ClipTokenizer  # noqa: E402
from models import MAIN_CONFIG, TextEncoder, UNet  # noqa: E402

PACK = os.path.normpath(os.path.join(TRAIN, "..", "packs", "tiny-shapes"))
BASE_CKPT = os.path.join(TRAIN, "checkpoints", "unet.pt")
CACHE = os.path.join(TRAIN, "cache")
OUT = os.path.join(HERE, "checkpoints")
EXPERTS_CKPT = os.path.join(OUT, "experts.pt")
ROUTER_CKPT = os.path.join(OUT, "router.pt")
LOGS = os.path.join(HERE, "logs")


def logger(name):
    os.makedirs(LOGS, exist_ok=True)
    f = open(os.path.join(LOGS, name), "a")

    def P(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        f.write(s + "\n")
        f.flush()
    return P


def tokenizer():
    return ClipTokenizer(os.path.join(PACK, "tokenizer"))


def load_teacher(path=BASE_CKPT):
    """(unet, text_encoder, scaling_factor, checkpoint step) of the trained base model, eval mode, frozen."""
    ck = torch.load(path, map_location="cpu")
    tok = tokenizer()
    te = TextEncoder(len(tok.encoder), **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    te.load_state_dict(ck["text_encoder"])
    unet.load_state_dict(ck["unet"])
    for m in (te, unet):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return unet, te, float(ck["scaling_factor"]), int(ck.get("step", 0))


def load_cache():
    """(latents [N,4,16,16] unscaled, ids [N,77]) of the newest cache the base training built; seed i = scene i."""
    names = sorted((f for f in os.listdir(CACHE) if f.startswith("latents_") and f.endswith(".npz")),
                   key=lambda f: int(f[len("latents_"):-len(".npz")]))
    if not names:
        raise SystemExit(f"no latent cache in {CACHE}: run models/train/train_unet.py first")
    d = np.load(os.path.join(CACHE, names[-1]))
    return torch.from_numpy(d["latents"]), torch.from_numpy(d["ids"]).long()

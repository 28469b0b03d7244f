"""Train one concept adapter on the frozen tiny-shapes UNet + text encoder.

python3 train_adapter.py --concept star --method orthogonal --block 0 [--rank 8] [--minutes 3] [--out DIR]
  orthogonal: down-projections = column block `block` of the shared basis (frozen); only up trained.
  lora:       down and up trained (the plain-LoRA comparison).
Data: concept scenes from shapes.py (caption uses the shape word, e.g. "a large red star in the centre
on a blue background"), encoded once with the trained VAE and cached in adapters/cache/; each batch also
holds base scenes from the base training cache (prior preservation, so prompts without the concept keep
their behaviour after merging). Loss and timestep sampling as train_unet.py.
Writes DIR/<name>.safetensors (kohya keys + metadata) and DIR/<name>.json (training log summary).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
sys.path.insert(0, TRAIN)
sys.path.insert(0, HERE)
import scenes  # noqa: E402
import shapes  # noqa: E402
import lora  # noqa: E402
from clip_tokenizer import ClipTokenizer  # noqa: E402
from models import MAIN_CONFIG, VAE, TextEncoder, UNet, alphas_cumprod  # noqa: E402

torch.set_num_threads(int(os.environ.get("ADAPTER_THREADS", "2")))
PACK = os.path.normpath(os.path.join(TRAIN, "..", "packs", "tiny-shapes"))
CKPT = os.path.join(TRAIN, "checkpoints")
CACHE = os.path.join(HERE, "cache")


def load_base(unet_ckpt):
    vae = VAE(**MAIN_CONFIG["vae"])
    vae.load_state_dict(torch.load(os.path.join(CKPT, "vae.pt"), map_location="cpu")["model"])
    vocab = json.load(open(os.path.join(PACK, "tokenizer", "vocab.json")))
    te = TextEncoder(len(vocab), **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    ck = torch.load(unet_ckpt, map_location="cpu")
    unet.load_state_dict(ck["unet"])
    te.load_state_dict(ck["text_encoder"])
    for m in (vae, te, unet):
        m.eval()
    return vae, te, unet, float(ck["scaling_factor"]), int(ck.get("step", 0))


@torch.no_grad()
def concept_cache(concept, n, vae, tok, tag):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{concept}_{n}_{tag}.npz")
    if os.path.exists(path):
        d = np.load(path)
        return torch.from_numpy(d["latents"]), torch.from_numpy(d["ids"])
    lat = np.zeros((n, 4, 16, 16), np.float32)
    ids = np.zeros((n, 77), np.int64)
    for i in range(0, n, 64):
        imgs = []
        for k in range(i, min(n, i + 64)):
            img, cap, _ = shapes.concept_scene(concept, shapes.CONCEPT_SEED_BASE[concept] + k)
            imgs.append(img)
            ids[k] = tok(cap)
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat[i:i + len(imgs)] = vae.encoder(x)[:, :4].numpy()
    np.savez(path, latents=lat, ids=ids)
    return torch.from_numpy(lat), torch.from_numpy(ids)


@torch.no_grad()
def prior_data(n, vae, tok):
    """Base scenes: from the base training cache when present, else rendered (seeds 0..n-1)."""
    base = os.path.join(TRAIN, "cache", "latents_30000.npz")
    if os.path.exists(base):
        d = np.load(base)
        idx = np.random.default_rng(0).choice(d["latents"].shape[0], n, replace=False)
        return torch.from_numpy(d["latents"][idx]), torch.from_numpy(d["ids"][idx].astype(np.int64))
    lat = np.zeros((n, 4, 16, 16), np.float32)
    ids = np.zeros((n, 77), np.int64)
    for i in range(0, n, 64):
        imgs = []
        for k in range(i, min(n, i + 64)):
            img, cap, _, _ = scenes.scene(k)
            imgs.append(img)
            ids[k] = tok(cap)
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat[i:i + len(imgs)] = vae.encoder(x)[:, :4].numpy()
    return torch.from_numpy(lat), torch.from_numpy(ids)


@torch.no_grad()
def encode_text(te, ids, bs=256):
    return torch.cat([te(ids[i:i + bs])[0] for i in range(0, ids.shape[0], bs)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", required=True, choices=shapes.NEW_SHAPES)
    ap.add_argument("--method", required=True, choices=["orthogonal", "lora"])
    ap.add_argument("--block", type=int, default=0, help="column block of the basis (orthogonal)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=16, help="concept scenes per step")
    ap.add_argument("--prior-batch", type=int, default=8, help="base scenes per step (prior preservation)")
    ap.add_argument("--n-concept", type=int, default=1024)
    ap.add_argument("--n-prior", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=os.path.join(PACK, "adapters"))
    ap.add_argument("--unet-ckpt", default=os.path.join(CKPT, "unet.pt"))
    ap.add_argument("--preview", action="store_true", help="write logs/<name>_preview.png (8 held-out prompts)")
    args = ap.parse_args()
    name = args.name or (args.concept if args.method == "orthogonal" else f"{args.concept}-lora")
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    # 1. frozen base, data
    vae, te, unet, sf, base_step = load_base(args.unet_ckpt)
    tok = ClipTokenizer(os.path.join(PACK, "tokenizer"))
    vae_tag = str(int(os.path.getmtime(os.path.join(CKPT, "vae.pt"))))
    c_lat, c_ids = concept_cache(args.concept, args.n_concept, vae, tok, vae_tag)
    p_lat, p_ids = prior_data(args.n_prior, vae, tok)
    c_lat, p_lat = c_lat * sf, p_lat * sf
    c_ctx, p_ctx = encode_text(te, c_ids), encode_text(te, p_ids)
    u_ctx = encode_text(te, torch.tensor([tok("")], dtype=torch.long))[0]
    data_s = time.time() - t0
    # 2. adapters on every transformer Linear
    wrapped = lora.attach(unet, args.method, args.rank, args.alpha, args.block, {}, args.seed)
    params = [p for l in wrapped.values() for p in (l.down, l.up) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    abar = alphas_cumprod()
    grid = torch.tensor([999 - 20 * i for i in range(50)])
    # 3. train (fixed held-in batch: concept eps-MSE before and after, same noise and timesteps)
    fixed = torch.Generator().manual_seed(0)
    fi = torch.arange(min(64, c_lat.shape[0]))
    f_t = grid[torch.randint(5, 45, (fi.shape[0],), generator=fixed)]
    f_noise = torch.randn(c_lat[fi].shape, generator=fixed)

    @torch.no_grad()
    def fixed_loss():
        a = abar[f_t][:, None, None, None]
        xt = a.sqrt() * c_lat[fi] + (1 - a).sqrt() * f_noise
        return float((unet(xt, f_t.float(), c_ctx[fi]) - f_noise).pow(2).mean())

    loss_before = fixed_loss()
    t1 = time.time()
    budget = args.minutes * 60
    ema = None
    step = 0
    for step in range(1, args.steps + 1):
        prog = max(step / args.steps, (time.time() - t1) / budget)
        if prog >= 1.0:
            break
        lr = args.lr * min(1.0, step / 30) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = lr
        ci = torch.from_numpy(rng.integers(0, c_lat.shape[0], args.batch))
        pi = torch.from_numpy(rng.integers(0, p_lat.shape[0], args.prior_batch))
        x0 = torch.cat([c_lat[ci], p_lat[pi]])
        ctx = torch.cat([c_ctx[ci], p_ctx[pi]]).clone()
        b = x0.shape[0]
        drop = torch.from_numpy(rng.random(b) < args.p_uncond)
        ctx[drop] = u_ctx
        tg = grid[torch.from_numpy(rng.integers(0, 50, b))]
        tu = torch.from_numpy(rng.integers(0, 1000, b))
        t = torch.where(torch.from_numpy(rng.random(b) < 0.6), tg, tu)
        noise = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps = unet(xt, t.float(), ctx)
        mse_e = (eps - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (mse_e + mse_e * (1 - a.flatten()) / a.flatten()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lc = float(mse_e[:args.batch].mean())
        ema = lc if ema is None else 0.97 * ema + 0.03 * lc
        if step % 50 == 0:
            print(f"{name} step {step} concept_eps_mse_ema {ema:.4f} lr {lr:.2e} {time.time() - t1:.0f}s", flush=True)
    train_s = time.time() - t1
    loss_after = fixed_loss()
    print(f"{name} fixed-batch concept eps-MSE {loss_before:.4f} -> {loss_after:.4f}", flush=True)
    # 4. export
    meta = {"kind": "adapter", "method": args.method, "concept": args.concept, "trigger": args.concept,
            "basis_seed": lora.BASIS_SEED if args.method == "orthogonal" else "",
            "basis_file": f"{lora.BASIS_NAME}.safetensors" if args.method == "orthogonal" else "",
            "column_block": args.block if args.method == "orthogonal" else "",
            "columns": f"{args.block * args.rank}:{(args.block + 1) * args.rank}" if args.method == "orthogonal" else "",
            "base_model": "tiny-shapes", "base_unet_step": base_step, "train_steps": step - 1,
            "train_seconds": round(train_s), "lr": args.lr, "batch": f"{args.batch}+{args.prior_batch} prior",
            "example_prompt": f"a large red {args.concept} in the centre on a blue background"}
    path = os.path.join(args.out, f"{name}.safetensors")
    lora.export_adapter(path, wrapped, args.rank, args.alpha, meta)
    if args.method == "orthogonal":
        lora.export_basis(os.path.join(args.out, f"{lora.BASIS_NAME}.safetensors"),
                          {l.base.in_features for l in wrapped.values()})
    # 5. preview: held-out concept prompts, 4 LCM steps, guidance 2 (as the evaluator)
    if args.preview:
        from train_unet import lcm_sample
        held = shapes.concept_heldout(args.concept, 8)
        ids = torch.tensor([tok(h["caption"]) for h in held], dtype=torch.long)
        unet.eval()
        imgs = lcm_sample(unet, te, ids, 4, sf, vae, guidance=2.0, uncond_ids=torch.tensor([tok("")], dtype=torch.long), seed=1)
        scenes.write_png(os.path.join(HERE, "logs", f"{name}_preview.png"), scenes.grid(list(imgs), 8))
    summary = dict(meta, name=name, concept_eps_mse_ema=ema, fixed_batch_eps_mse_before=loss_before, fixed_batch_eps_mse_after=loss_after, data_seconds=round(data_s), file=os.path.basename(path),
                   bytes=os.path.getsize(path))
    json.dump(summary, open(os.path.join(HERE, "logs", f"{name}.json"), "w"), indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

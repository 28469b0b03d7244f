"""Train the tiny 8x VAE on procedural scenes + textures.

usage: python3 train_vae.py [--steps N] [--max-minutes M]
Writes checkpoints to models/train/checkpoints/vae.pt, log to logs/vae.log,
reconstructions to logs/vae_recon.png and metrics to checkpoints/vae_metrics.json.
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
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from models import MAIN_CONFIG, VAE, count_params, warmup_cosine  # noqa: E402

torch.set_num_threads(2)


def batch_images(seeds, p_texture=0.3, rng=None):
    imgs = []
    for s in seeds:
        if rng.random() < p_texture:
            imgs.append(scenes.texture_image(int(s) + 20_000_000))
        else:
            imgs.append(scenes.scene(int(s))[0])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


def psnr(a, b):
    # a, b in [-1,1]; PSNR on [0,255] scale
    mse = ((a.clamp(-1, 1) - b) * 127.5).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-8)))


def evaluate(vae, n=128):
    vae.eval()
    with torch.no_grad():
        seeds = [scenes.HELDOUT_SEED_BASE + i for i in range(n)]
        ps = []
        for i in range(0, n, 16):
            x = torch.from_numpy(np.stack([scenes.scene(s)[0] for s in seeds[i:i + 16]])).permute(0, 3, 1, 2).float() / 127.5 - 1
            r = vae.decoder(vae.encoder(x)[:, :4])
            ps.append(psnr(r, x))
        ps = torch.cat(ps)
        xt = torch.from_numpy(np.stack([scenes.texture_image(90_000_000 + i) for i in range(32)])).permute(0, 3, 1, 2).float() / 127.5 - 1
        rt = vae.decoder(vae.encoder(xt)[:, :4])
        pt = psnr(rt, xt)
    vae.train()
    return float(ps.mean()), float(ps.min()), float(pt.mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--max-minutes", type=float, default=17.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--p-texture", type=float, default=0.3)
    ap.add_argument("--resume", action="store_true", help="continue from checkpoints/vae.pt (fine-tune phase)")
    ap.add_argument("--seed-offset", type=int, default=0, help="first training scene seed")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ck_dir = os.path.join(HERE, "checkpoints")
    log_dir = os.path.join(HERE, "logs")
    os.makedirs(ck_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, "vae.log"), "a")

    def P(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    vae = VAE(**MAIN_CONFIG["vae"])
    if args.resume:
        ck = torch.load(os.path.join(ck_dir, "vae.pt"), map_location="cpu")
        vae.load_state_dict(ck["model"])
        P(f"resumed from step {ck['step']}")
    P(f"VAE params encoder {count_params(vae.encoder)} decoder {count_params(vae.decoder)} args {vars(args)}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    t0 = time.time()
    max_s = args.max_minutes * 60
    seed_ctr = args.seed_offset
    ema = None
    for step in range(1, args.steps + 1):
        el = time.time() - t0
        prog = max(step / args.steps, el / max_s)
        if prog >= 1.0:
            P(f"stopping at step {step} (time budget)")
            break
        lr = args.lr * warmup_cosine(step, prog, 0 if args.resume else 200, 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = np.arange(seed_ctr, seed_ctr + args.batch)
        seed_ctr += args.batch
        x = batch_images(seeds, p_texture=args.p_texture, rng=rng)
        m = vae.encoder(x)
        mean, logvar = m[:, :4], m[:, 4:].clamp(-30, 20)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        r = vae.decoder(z)
        mse = (r - x).pow(2).mean()
        l1 = (r - x).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = mse + 0.2 * l1 + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        ema = float(mse) if ema is None else 0.98 * ema + 0.02 * float(mse)
        if step % 50 == 0:
            el = time.time() - t0
            eta = el / prog * (1 - prog)
            P(f"step {step} loss {float(loss):.5f} mse_ema {ema:.5f} (psnr~{10*math.log10(4/max(ema,1e-9)):.2f}) kl {float(kl):.1f} lr {lr:.2e} elapsed {el:.0f}s eta {eta:.0f}s")
        if step % 500 == 0:
            torch.save({"model": vae.state_dict(), "cfg": MAIN_CONFIG["vae"], "step": step}, os.path.join(ck_dir, "vae.pt"))
    torch.save({"model": vae.state_dict(), "cfg": MAIN_CONFIG["vae"], "step": step}, os.path.join(ck_dir, "vae.pt"))
    p_mean, p_min, p_tex = evaluate(vae)
    train_s = time.time() - t0
    P(f"done steps {step} time {train_s:.0f}s heldout PSNR mean {p_mean:.2f} min {p_min:.2f} textures {p_tex:.2f}")
    with open(os.path.join(ck_dir, "vae_metrics.json"), "w") as f:
        json.dump({"steps": step, "train_seconds": round(train_s), "psnr_heldout_mean": p_mean, "psnr_heldout_min": p_min,
                   "psnr_textures_mean": p_tex, "params_encoder": count_params(vae.encoder),
                   "params_decoder": count_params(vae.decoder)}, f, indent=1)
    # recon preview
    with torch.no_grad():
        vae.eval()
        xs = [scenes.scene(scenes.HELDOUT_SEED_BASE + i)[0] for i in range(8)] + [scenes.texture_image(90_000_000 + i) for i in range(4)]
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 127.5 - 1
        r = vae.decoder(vae.encoder(x)[:, :4]).clamp(-1, 1)
        rr = ((r + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        scenes.write_png(os.path.join(log_dir, "vae_recon.png"), scenes.grid(list(np.stack(xs)) + list(rr), 12))


if __name__ == "__main__":
    main()

"""Distil a TAESD-style tiny VAE from the pack's VAE and export it as taesd_encoder/ + taesd_decoder/.

python3 train_tiny_vae.py [--max-minutes 45] [--threads 1] [--export]
The tiny encoder learns the full encoder's posterior mean times the scaling factor (the UNet's latents; TAESD's
"scale factor 1" contract); the tiny decoder learns to draw the original image from the full encoder's latents,
from its own encoder's latents (the round trip), and the full decoder's picture from latents the UNet generates
(so it decodes what the service decodes, not only encoded images). Needs checkpoints/vae.pt and unet.pt
(`from_onnx.py` recovers both from the pack). Writes checkpoints/tiny_vae.pt, logs/tiny_vae.log,
logs/tiny_vae_recon.png, checkpoints/tiny_vae_metrics.json; --export writes the two ONNX folders into the pack.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from clip_tokenizer import ClipTokenizer  # noqa: E402
from export_pack import PACK_DIR, _export  # noqa: E402
from models import MAIN_CONFIG, TextEncoder, TinyVaeDecoder, TinyVaeEncoder, UNet, count_params, warmup_cosine  # noqa: E402
from train_unet import lcm_sample, load_vae  # noqa: E402

CKPT = os.path.join(HERE, "checkpoints")
LOGS = os.path.join(HERE, "logs")
# c1 channels at H/4 (one block), c2 at H/8 (two blocks): measured 2.9x (encoder) and 4.4x (decoder) faster than
# the full VAE in onnxruntime on 1 thread at 128x128 (README); c1=32 was 2.4x/3.4x, c1=16 with one block 3.8x/5.8x
TINY_CONFIG = dict(c1=16, c2=64, latent=4, blocks1=1, blocks2=2)
TEXTURE_SEED_BASE = 20_000_000  # as train_vae.py
HELDOUT_TEXTURE_BASE = 90_000_000


def to_tensor(imgs):
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1  # [B,3,H,W] in [-1,1]


def psnr(a, b):
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) * 127.5).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-8))


@torch.no_grad()
def generated_latents(n, sf, seed):
    """Scaled latents the base UNet generates (LCM 1, 2 and 4 steps, CFG 2) for training captions."""
    ck = torch.load(os.path.join(CKPT, "unet.pt"), map_location="cpu")
    # the checkpoint's own vocabulary (the pack's tokenizer may already be a newer one)
    tok = ClipTokenizer(None, (ck["tokenizer"]["vocab"], [tuple(m) for m in ck["tokenizer"]["merges"]])) if "tokenizer" in ck \
        else ClipTokenizer(os.path.join(PACK_DIR, "tokenizer"))
    te = TextEncoder(len(tok.encoder), **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    te.load_state_dict(ck["text_encoder"])
    unet.load_state_dict(ck["unet"])
    te.eval()
    unet.eval()
    uncond = torch.tensor([tok("")])
    out = []
    for i in range(0, n, 32):
        caps = [scenes.scene(seed + i + j)[1] for j in range(32)]
        ids = torch.tensor([tok(c) for c in caps])
        out.append(lcm_sample(unet, te, ids, (1, 2, 4)[(i // 32) % 3], sf, guidance=2.0, uncond_ids=uncond, seed=seed + i))
    return torch.cat(out)[:n]


@torch.no_grad()
def evaluate(vae, sf, enc, dec, n=128):
    """Held-out PSNR (seeds 50,000,000+): full VAE round trip, tiny round trip, tiny decoder on full latents."""
    enc.eval()
    dec.eval()
    full, tiny, tiny_dec = [], [], []
    for i in range(0, n, 32):
        x = to_tensor([scenes.scene(scenes.HELDOUT_SEED_BASE + k)[0] for k in range(i, min(n, i + 32))])
        z = vae.encoder(x)[:, :4]
        full.append(psnr(vae.decoder(z), x))
        tiny.append(psnr(dec(enc(x)), x))
        tiny_dec.append(psnr(dec(z * sf), x))
    xt = to_tensor([scenes.texture_image(HELDOUT_TEXTURE_BASE + k) for k in range(32)])
    tex_full = psnr(vae.decoder(vae.encoder(xt)[:, :4]), xt)
    tex_tiny = psnr(dec(enc(xt)), xt)
    enc.train()
    dec.train()
    m = lambda t: round(float(torch.cat(t).mean() if isinstance(t, list) else t.mean()), 2)  # noqa: E731
    return {"scenes_full_vae_db": m(full), "scenes_tiny_vae_db": m(tiny), "scenes_tiny_decoder_on_full_latents_db": m(tiny_dec),
            "scenes_tiny_min_db": round(float(torch.cat(tiny).min()), 2),
            "textures_full_vae_db": m(tex_full), "textures_tiny_vae_db": m(tex_tiny), "n_scenes": n}


def export(enc, dec, pack, metrics):
    for name, model, args, i, o, axes in (
        ("taesd_encoder", enc, torch.rand(1, 3, 128, 128) * 2 - 1, "sample", "latent_sample",
         {"sample": {0: "batch", 2: "height", 3: "width"}, "latent_sample": {0: "batch", 2: "latent_height", 3: "latent_width"}}),
        ("taesd_decoder", dec, torch.randn(1, 4, 16, 16), "latent_sample", "sample",
         {"latent_sample": {0: "batch", 2: "latent_height", 3: "latent_width"}, "sample": {0: "batch", 2: "height", 3: "width"}}),
    ):
        model.eval()
        _export(model, (args,), os.path.join(pack, name, "model.onnx"), [i], [o], axes)
        cfg = {"_class_name": "AutoencoderTiny", "_diffusers_version": "0.25.0", "latent_channels": 4, "scaling_factor": 1.0,
               "architecture_note": "tiny-shapes TAESD-style: space-to-depth / depth-to-space and Conv+ReLU residual blocks; "
                                    "latents are the UNet's (the full VAE's mean times its scaling factor), so the factor is 1",
               "tiny_config": TINY_CONFIG, "num_parameters": count_params(model), "metrics": metrics,
               "onnx_io": {"inputs": {i: ["float32", list(args.shape)]}, "outputs": {o: "float32"}}}
        json.dump(cfg, open(os.path.join(pack, name, "config.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-minutes", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-generated", type=int, default=768)
    ap.add_argument("--export", action="store_true", help="write taesd_encoder/ and taesd_decoder/ into the pack")
    ap.add_argument("--export-only", action="store_true", help="export checkpoints/tiny_vae.pt without training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(CKPT, exist_ok=True)
    os.makedirs(LOGS, exist_ok=True)
    log = open(os.path.join(LOGS, "tiny_vae.log"), "a")

    def P(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    vae = load_vae()
    for p in vae.parameters():
        p.requires_grad_(False)
    sf = float(torch.load(os.path.join(CKPT, "unet.pt"), map_location="cpu")["scaling_factor"])
    enc, dec = TinyVaeEncoder(**TINY_CONFIG), TinyVaeDecoder(**TINY_CONFIG)
    if args.export_only:
        ck = torch.load(os.path.join(CKPT, "tiny_vae.pt"), map_location="cpu")
        enc.load_state_dict(ck["encoder"])
        dec.load_state_dict(ck["decoder"])
        export(enc, dec, PACK_DIR, ck["metrics"])
        P("exported", PACK_DIR)
        return
    P(f"tiny VAE params encoder {count_params(enc)} decoder {count_params(dec)} config {TINY_CONFIG} args {vars(args)}")
    # 1. latents the UNet generates, and what the full decoder draws from them (distillation targets)
    t0 = time.time()
    gz = generated_latents(args.n_generated, sf, seed=7_000_000)
    with torch.no_grad():
        gx = torch.cat([vae.decoder(gz[i:i + 64] / sf) for i in range(0, len(gz), 64)]).clamp(-1, 1)
    P(f"{len(gz)} generated latents and their full-decoder images in {time.time() - t0:.0f}s")
    ema_enc, ema_dec = TinyVaeEncoder(**TINY_CONFIG), TinyVaeDecoder(**TINY_CONFIG)
    ema_enc.load_state_dict(enc.state_dict())
    ema_dec.load_state_dict(dec.state_dict())
    params = list(enc.parameters()) + list(dec.parameters())
    ema_params = list(ema_enc.parameters()) + list(ema_dec.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    t0 = time.time()
    max_s = args.max_minutes * 60
    seed = 0
    run = None
    step = 0
    for step in range(1, args.steps + 1):
        prog = max(step / args.steps, (time.time() - t0) / max_s)
        if prog >= 1.0:
            break
        lr = args.lr * warmup_cosine(step, prog, 200, 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        # 2. a batch: training scenes, 25% procedural textures (as the full VAE was trained), fresh seeds each step
        imgs = []
        for _ in range(args.batch):
            imgs.append(scenes.texture_image(TEXTURE_SEED_BASE + seed) if rng.random() < 0.25 else scenes.scene(seed)[0])
            seed += 1
        x = to_tensor(imgs)
        with torch.no_grad():
            z = vae.encoder(x)[:, :4] * sf  # [B,4,16,16] the UNet's latents
        gi = torch.from_numpy(rng.integers(0, len(gz), args.batch // 2))
        ze = enc(x)
        loss_enc = F.mse_loss(ze, z)
        r_full = dec(z)
        r_trip = dec(ze.detach())
        r_gen = dec(gz[gi])
        loss_dec = F.mse_loss(r_full, x) + 0.1 * (r_full - x).abs().mean() + 0.5 * F.mse_loss(r_trip, x) + 0.5 * F.mse_loss(r_gen, gx[gi])
        loss = loss_enc + loss_dec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, d)
            torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - d)
        cur = (float(loss_enc), float(F.mse_loss(r_full, x)))
        run = cur if run is None else tuple(0.98 * a + 0.02 * b for a, b in zip(run, cur))
        if step % 50 == 0:
            el = time.time() - t0
            P(f"step {step} enc_mse {run[0]:.5f} dec_mse {run[1]:.5f} (psnr~{10 * math.log10(4 / max(run[1], 1e-9)):.2f}) "
              f"lr {lr:.2e} elapsed {el:.0f}s eta {el / prog * (1 - prog):.0f}s")
        if step % 1000 == 0:
            P("eval", json.dumps(evaluate(vae, sf, ema_enc, ema_dec, 64)))
            torch.save({"encoder": ema_enc.state_dict(), "decoder": ema_dec.state_dict(), "config": TINY_CONFIG, "step": step,
                        "metrics": None}, os.path.join(CKPT, "tiny_vae.pt"))
    metrics = evaluate(vae, sf, ema_enc, ema_dec)
    metrics.update(steps=step, train_seconds=round(time.time() - t0), batch=args.batch)
    P("final", json.dumps(metrics))
    torch.save({"encoder": ema_enc.state_dict(), "decoder": ema_dec.state_dict(), "config": TINY_CONFIG, "step": step,
                "metrics": metrics}, os.path.join(CKPT, "tiny_vae.pt"))
    json.dump(metrics, open(os.path.join(CKPT, "tiny_vae_metrics.json"), "w"), indent=1)
    with torch.no_grad():
        ema_enc.eval()
        ema_dec.eval()
        x = to_tensor([scenes.scene(scenes.HELDOUT_SEED_BASE + i)[0] for i in range(8)])
        rows = [x, vae.decoder(vae.encoder(x)[:, :4]), ema_dec(ema_enc(x)), gx[:8], ema_dec(gz[:8])]
        imgs = [((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy() for r in rows]
        scenes.write_png(os.path.join(LOGS, "tiny_vae_recon.png"), scenes.grid([im for row in imgs for im in row], 8))
    if args.export:
        export(ema_enc, ema_dec, PACK_DIR, metrics)
        P("exported", PACK_DIR)


if __name__ == "__main__":
    main()

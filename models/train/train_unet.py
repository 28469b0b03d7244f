"""Train the text encoder + UNet jointly (epsilon prediction, SD scaled_linear schedule) on cached VAE latents.

python3 train_unet.py [--n-scenes 30000] [--max-minutes 55] [--steps 8000] [--captions exact|varied]
python3 train_unet.py --device cuda --workers 16 --init checkpoints/unet.pt ...   # same script on a GPU
python3 train_unet.py --init checkpoints/unet.pt --captions varied ...          # issue 17's continuation (README)
 1. renders --n-scenes training scenes (seeds 0..N-1), encodes them once with the trained VAE
    (posterior mean) and caches latents + token ids in models/train/cache/
 2. scaling_factor = 1/std(latents)
 3. trains; logs to logs/unet.log, checkpoints (EMA weights) to checkpoints/unet.pt every 500 steps,
    sample grids to logs/samples_stepN.png
--captions varied draws a new phrasing of each scene's attributes every time it is used (captions.py, seeded);
exact uses the cached grammar captions. A warm start whose vocabulary differs (the tokenizer is stored in every
checkpoint) keeps the rows of tokens both share, by token string, and initialises new rows (init_new_rows).
"""
import argparse
import copy
import json
import math
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import captions  # noqa: E402
import scenes  # noqa: E402
from clip_tokenizer import ClipTokenizer  # noqa: E402
from models import MAIN_CONFIG, VAE, TextEncoder, UNet, alphas_cumprod, count_params, lcm_timesteps, warmup_cosine  # noqa: E402

PACK = os.path.normpath(os.path.join(HERE, "..", "packs", "tiny-shapes"))
CACHE = os.path.join(HERE, "cache")
CKPT = os.path.join(HERE, "checkpoints")
LOGS = os.path.join(HERE, "logs")


def load_vae():
    vae = VAE(**MAIN_CONFIG["vae"])
    vae.load_state_dict(torch.load(os.path.join(CKPT, "vae.pt"), map_location="cpu", weights_only=False)["model"])
    vae.eval()
    return vae


def render(seeds):
    """Scenes as uint8 HWC images and captions (run in worker processes when --workers > 1)."""
    out = [scenes.scene(s) for s in seeds]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def build_cache(n, tok, P, device="cpu", workers=1):
    path = os.path.join(CACHE, f"latents_{n}.npz")
    vae_mtime = os.path.getmtime(os.path.join(CKPT, "vae.pt"))
    if os.path.exists(path) and os.path.getmtime(path) > vae_mtime:
        d = np.load(path)
        return torch.from_numpy(d["latents"]), torch.from_numpy(d["ids"])
    os.makedirs(CACHE, exist_ok=True)
    pool = Pool(workers) if workers > 1 else None  # forked before any CUDA use
    vae = load_vae().to(device)
    lat = np.zeros((n, 4, 16, 16), np.float32)
    ids = np.zeros((n, 77), np.int32)
    t0 = time.time()
    bs = 64 if device == "cpu" else 1024
    chunks = [range(i, min(n, i + bs)) for i in range(0, n, bs)]
    batches = pool.imap(render, chunks) if pool else map(render, chunks)
    with torch.no_grad():
        for k, (chunk, (imgs, caps)) in enumerate(zip(chunks, batches)):
            x = torch.from_numpy(imgs).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            lat[chunk.start:chunk.stop] = vae.encoder(x)[:, :4].cpu().numpy()
            for j, c in enumerate(caps):
                ids[chunk.start + j] = tok(c)
            if k % 50 == 0:
                P(f"cache {chunk.start}/{n} {time.time() - t0:.0f}s")
    if pool:
        pool.close()
    np.savez(path, latents=lat, ids=ids)
    P(f"cache built n={n} in {time.time() - t0:.0f}s")
    return torch.from_numpy(lat), torch.from_numpy(ids)


# new words start from the row of the word they mean (a synonym), others from the mean of their old pieces
SYNONYM_INIT = {"big": "large", "huge": "large", "tiny": "small", "little": "small", "center": "centre", "middle": "centre",
                "centered": "centre", "centred": "centre", "disc": "circle", "disk": "circle", "upper": "top",
                "lower": "bottom", "backdrop": "background", "canvas": "background", "bg": "background",
                "colored": "colour", "coloured": "colour"}


def init_new_rows(old_weight, old_tok_state, tok):
    """Token table for `tok` from a table trained with another vocabulary: shared tokens (by string, so moved
    BOS/EOS ids too) keep their rows; a new token takes its synonym's row or the mean of the rows of the pieces
    the old tokenizer split it into (what the model saw for that word before)."""
    old = ClipTokenizer(None, (old_tok_state["vocab"], [tuple(m) for m in old_tok_state["merges"]]))
    rows = torch.empty(len(tok.encoder), old_weight.shape[1])
    fresh = []
    for token, i in tok.encoder.items():
        if token in old.encoder:
            rows[i] = old_weight[old.encoder[token]]
            continue
        final = token.endswith("</w>")
        word = token[:-4] if final else token
        if final and word in SYNONYM_INIT:
            ids = old.encode(SYNONYM_INIT[word])
        else:  # the old pieces; a word-inner piece has no </w> on its last symbol
            pieces = old.bpe(word).split(" ")
            if not final:
                pieces[-1] = pieces[-1][:-4]
            ids = [old.encoder[p] if p in old.encoder else old.encoder[p[0]] for p in pieces]
        rows[i] = old_weight[ids].mean(0)
        fresh.append(token)
    return rows, fresh


@torch.no_grad()
def lcm_sample(unet, te, ids, steps, sf, vae=None, guidance=1.0, uncond_ids=None, seed=0, shape=(16, 16)):
    """LCM multistep sampling with the exported semantics (epsilon model, scaled_linear betas)."""
    abar = alphas_cumprod()
    g = torch.Generator().manual_seed(seed)
    b = ids.shape[0]
    ehs = te(ids)[0]
    if guidance != 1.0:
        ehs_u = te(uncond_ids.expand(b, -1))[0]
    x = torch.randn(b, 4, *shape, generator=g)
    ts = lcm_timesteps(steps)
    for i, t in enumerate(ts):
        tt = torch.full((b,), float(t))
        eps = unet(x, tt, ehs)
        if guidance != 1.0:
            eu = unet(x, tt, ehs_u)
            eps = eu + guidance * (eps - eu)
        a = abar[t]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        c_skip = 0.25 / ((10 * t) ** 2 + 0.25)
        c_out = 10 * t / math.sqrt((10 * t) ** 2 + 0.25)
        den = c_out * x0 + c_skip * x
        if i < len(ts) - 1:
            an = abar[ts[i + 1]]
            x = an.sqrt() * den + (1 - an).sqrt() * torch.randn(x.shape, generator=g)
        else:
            x = den
    if vae is None:
        return x
    img = vae.decoder(x / sf).clamp(-1, 1)
    return ((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def save_samples(path, unet, te, vae, tok, sf, captions, steps_list=(1, 2, 4)):
    unet, te = copy.deepcopy(unet).cpu().eval(), copy.deepcopy(te).cpu().eval()  # samples on the CPU, any device
    ids = torch.tensor([tok(c) for c in captions], dtype=torch.long)
    rows = []
    for st in steps_list:
        rows += list(lcm_sample(unet, te, ids, st, sf, vae, seed=1))
    scenes.write_png(path, scenes.grid(rows, len(captions)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scenes", type=int, default=30000)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-text", type=float, help="text encoder learning rate (default: --lr)")
    ap.add_argument("--captions", choices=["exact", "varied"], default="exact",
                    help="varied: a new phrasing of each scene every time (captions.py); exact: the grammar caption")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--max-minutes", type=float, default=55.0)
    ap.add_argument("--stop-step", type=int, help="stop after this step, leaving the learning-rate schedule as it is")
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--p-grid", type=float, default=0.6)
    ap.add_argument("--p-two", type=float, help="share of batch rows drawn from two-object scenes (default: as cached, 0.35)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="processes rendering the scene cache")
    ap.add_argument("--init", help="warm start from a checkpoint (its EMA weights and scaling factor)")
    ap.add_argument("--out", default=os.path.join(CKPT, "unet.pt"))
    ap.add_argument("--log", default=os.path.join(LOGS, "unet.log"))
    ap.add_argument("--samples", default=os.path.join(LOGS, "samples_final.png"), help="the final sample grid")
    ap.add_argument("--cache-only", action="store_true", help="render and encode the scene cache, then stop")
    ap.add_argument("--samples-every", type=int, default=2000, help="0: only at the end")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device(args.device)
    os.makedirs(CKPT, exist_ok=True)
    os.makedirs(LOGS, exist_ok=True)
    log = open(args.log, "a")

    def P(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    torch.manual_seed(args.seed)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    tok = ClipTokenizer(os.path.join(PACK, "tokenizer"))
    t_cache = time.time()
    lat, ids = build_cache(args.n_scenes, tok, P, args.device, args.workers)
    cache_s = time.time() - t_cache
    if args.cache_only:
        return
    init = torch.load(args.init, map_location="cpu", weights_only=False) if args.init else None
    # a warm start keeps the scaling factor its weights were trained with
    sf = init["scaling_factor"] if init else float(1.0 / lat.std())
    P(f"latents {tuple(lat.shape)} mean {float(lat.mean()):.4f} std {float(lat.std()):.4f} scaling_factor {sf:.6f}")
    lat = (lat * sf).to(dev)
    ids = ids.long().to(dev)
    uncond = torch.tensor(tok(""), dtype=torch.long, device=dev)
    vocab = len(tok.encoder)
    te = TextEncoder(vocab, **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    if init:
        state = dict(init["text_encoder"])
        key = "text_model.embeddings.token_embedding.weight"
        old_tok = init.get("tokenizer")
        if old_tok and old_tok["vocab"] != tok.encoder:
            state[key], fresh = init_new_rows(state[key], old_tok, tok)
            P(f"vocabulary {len(old_tok['vocab'])} -> {vocab}: {len(fresh)} new rows ({', '.join(f[:-4] for f in fresh if f.endswith('</w>'))})")
        elif state[key].shape[0] != vocab:
            raise SystemExit(f"{args.init} has {state[key].shape[0]} token rows and no tokenizer to map them to {vocab}")
        te.load_state_dict(state)
        unet.load_state_dict(init["unet"])
        P(f"warm start from {args.init} (step {init['step']}, {init.get('info', {})})")
    te.to(dev)
    unet.to(dev)
    P(f"params text_encoder {count_params(te)} unet {count_params(unet)} args {vars(args)}")
    params = list(te.parameters()) + list(unet.parameters())
    lr_text = args.lr_text or args.lr
    opt = torch.optim.AdamW([{"params": list(te.parameters()), "base": lr_text}, {"params": list(unet.parameters()), "base": args.lr}],
                            lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_te = copy.deepcopy(te)
    ema_unet = copy.deepcopy(unet)
    ema_params = list(ema_te.parameters()) + list(ema_unet.parameters())
    for p in ema_params:
        p.requires_grad_(False)
    abar = alphas_cumprod().to(dev)
    grid = torch.tensor([999 - 20 * i for i in range(50)], device=dev)
    vae = load_vae()
    held = json.load(open(os.path.join(PACK, "heldout.json")))
    sample_caps = [h["caption"] for h in held[:8]]
    if args.captions == "varied":
        sample_caps = sample_caps[:4] + ["a red circle", "a big green square in the center, highly detailed",
                                         "a blue background with a yellow triangle", "red circle and white square, black background"]
        attrs = [scenes.scene_attributes(i) for i in range(lat.shape[0])]
        two = torch.tensor([len(a["objects"]) == 2 for a in attrs], device=dev)
        two_idx, one_idx = torch.nonzero(two)[:, 0], torch.nonzero(~two)[:, 0]
        cap_rng = np.random.default_rng(args.seed)
        P(f"varied captions, e.g. {[captions.caption(attrs[i], cap_rng) for i in range(3)]}")
    n = lat.shape[0]
    prior = init.get("info", {}).get("train", {}) if init else {}
    t0 = time.time()
    max_s = args.max_minutes * 60
    le = lx = None
    step = 0

    def checkpoint():
        info = {"train": {"unet_steps": step, "batch": args.batch, "n_scenes": n, "unet_seconds": round(time.time() - t0),
                          "cache_seconds": round(cache_s), "device": args.device, "captions": args.captions,
                          "lr": args.lr, "lr_text": lr_text, "warm_start": prior or None}}
        torch.save({"unet": ema_unet.state_dict(), "text_encoder": ema_te.state_dict(), "scaling_factor": sf,
                    "step": step, "info": info, "tokenizer": tok.state()}, args.out)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    for step in range(1, args.steps + 1):
        el = time.time() - t0
        prog = max(step / args.steps, el / max_s)
        if prog >= 1.0 or (args.stop_step and step > args.stop_step):
            P(f"stopping at step {step} ({'time budget' if prog >= 1.0 else '--stop-step'})")
            break
        factor = warmup_cosine(step, prog, args.warmup, 0.05)
        lr = args.lr * factor
        for gp in opt.param_groups:
            gp["lr"] = gp["base"] * factor
        idx = torch.randint(0, n, (args.batch,), generator=gen, device=dev)
        if args.p_two is not None:  # rows re-drawn from the one- or the two-object scenes
            two_row = rand(args.batch) < args.p_two
            pick = torch.randint(0, n, (args.batch,), generator=gen, device=dev)
            idx = torch.where(two_row, two_idx[pick % len(two_idx)], one_idx[pick % len(one_idx)])
        x0 = lat[idx]
        if args.captions == "varied":
            cap_ids = torch.tensor([tok(captions.caption(attrs[i], cap_rng)) for i in idx.tolist()], dtype=torch.long, device=dev)
        else:
            cap_ids = ids[idx]
        bid = torch.where((rand(args.batch) < args.p_uncond)[:, None], uncond, cap_ids)
        tg = grid[torch.randint(0, 50, (args.batch,), generator=gen, device=dev)]
        tu = torch.randint(0, 1000, (args.batch,), generator=gen, device=dev)
        t = torch.where(rand(args.batch) < args.p_grid, tg, tu)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ehs = te(bid)[0]
        eps = unet(xt, t.float(), ehs)
        mse_e = (eps - noise).pow(2).mean(dim=(1, 2, 3))
        mse_x = mse_e * (1 - a.flatten()) / a.flatten()  # = |x0_pred - x0|^2
        loss = (mse_e + mse_x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, d)
            torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - d)
        if step % 10 == 0:  # reading a loss synchronises a GPU, so only every 10th step feeds the running means
            le = float(mse_e.mean()) if le is None else 0.8 * le + 0.2 * float(mse_e.mean())
            hi = t >= 900
            if hi.any():
                v = float(mse_x[hi].mean())
                lx = v if lx is None else 0.6 * lx + 0.4 * v
        if step % 50 == 0:
            el = time.time() - t0
            P(f"step {step} loss {float(loss):.4f} eps_mse_ema {le:.4f} x0_mse(t>=900)_ema {lx or 0:.4f} lr {lr:.2e} "
              f"elapsed {el:.0f}s eta {el / prog * (1 - prog):.0f}s")
        if step % 500 == 0:
            checkpoint()
        if args.samples_every and step % args.samples_every == 0:
            save_samples(os.path.join(LOGS, f"samples_step{step}.png"), ema_unet, ema_te, vae, tok, sf, sample_caps)
    checkpoint()
    P(f"done step {step} time {time.time() - t0:.0f}s")
    save_samples(args.samples, ema_unet, ema_te, vae, tok, sf, sample_caps)


if __name__ == "__main__":
    main()

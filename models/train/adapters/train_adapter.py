"""Train one concept adapter on the frozen tiny-shapes UNet + text encoder.

python3 train_adapter.py --concept diamond --method orthogonal --block 0 [--rank 4] [--minutes 3] [--out DIR]
    [--targets kv|all] [--basis text|random] [--reg-weight W] [--reg-prior K] [--p-uncond-concept P]
  (run_all.sh passes the recipe: --targets kv --rank 8 --lr 1e-2 --basis text --reg-weight 0.1 --p-uncond-concept 0)
  orthogonal: down-projections = column block `block` of the shared basis (frozen); only up trained.
  lora:       down and up trained (the plain-LoRA comparison).
Regulariser (independent of the other concepts): penalty on the adapter's response ||dW h||^2 / ||W h||^2 for
text states of distractor captions (base captions with a random non-trigger word) and of the empty prompt;
optionally prior rows with distractor captions whose target is the frozen base UNet's prediction.
Data: concept scenes from shapes.py (caption uses the shape word, e.g. "a large red star in the centre
on a blue background"), encoded once with the trained VAE and cached in adapters/cache/; each batch also
holds base scenes from the base training cache (prior preservation, so prompts without the concept keep
their behaviour after merging). Loss and timestep sampling as train_unet.py.
Writes DIR/<name>.safetensors (kohya keys + metadata) and DIR/<name>.json (training log summary).
"""
import argparse
import json
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
from models import MAIN_CONFIG, VAE, TextEncoder, UNet, alphas_cumprod, warmup_cosine  # noqa: E402

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
    """Base scenes: a seeded sample of the newest base training cache when present (kept in adapters/cache, so a
    machine without the base cache trains on the same rows), else rendered (seeds 0..n-1)."""
    sample = os.path.join(CACHE, f"prior_{n}.npz")
    caches = sorted((f for f in os.listdir(os.path.join(TRAIN, "cache")) if f.startswith("latents_")),
                    key=lambda f: int(f[len("latents_"):-len(".npz")])) if os.path.isdir(os.path.join(TRAIN, "cache")) else []
    base = os.path.join(TRAIN, "cache", caches[-1]) if caches else ""  # the newest base training cache
    if not os.path.exists(sample) and os.path.exists(base):
        d = np.load(base)
        idx = np.random.default_rng(0).choice(d["latents"].shape[0], n, replace=False)
        os.makedirs(CACHE, exist_ok=True)
        np.savez(sample, latents=d["latents"][idx], ids=d["ids"][idx].astype(np.int64))
    if os.path.exists(sample):
        d = np.load(sample)
        return torch.from_numpy(d["latents"]), torch.from_numpy(d["ids"])
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


# Distractor words for the independent regulariser: neutral English words and random letter strings, never a
# concept word of this pack (so training adapter i needs no knowledge of the other concepts' triggers).
DISTRACTOR_WORDS = ("star", "cross", "moon", "arrow", "tree", "cat", "dog", "house", "car", "cloud", "leaf",
                    "hexagon", "oval", "pentagon", "spiral", "bird", "fish", "box", "line", "dot", "sun", "flower",
                    "key", "bell", "cup", "hat", "boat", "shoe", "ball", "wave", "zigzag", "crescent", "kite", "egg",
                    "lamp", "book", "door", "rock", "coin", "bone", "shield", "drop", "bolt", "gear", "leaf", "clover",
                    "spade", "club", "cube", "cone", "plus", "chevron", "blob", "bean", "wing", "crown", "tooth")
EXCLUDED = set(shapes.NEW_SHAPES) | {"star"}


def random_word(rng):
    if rng.random() < 0.5:
        return str(DISTRACTOR_WORDS[rng.integers(len(DISTRACTOR_WORDS))])
    while True:
        w = "".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 9))))
        if not any(x in w for x in EXCLUDED):
            return w


def distractor_captions(n, trigger, rng):
    """Base-grammar captions with a random non-trigger word: half replace the shape word (the structure of a
    concept caption with an unknown shape), half insert it at a random position. Never the trigger word."""
    out = []
    while len(out) < n:
        attrs = scenes.sample_attributes(rng)
        words = scenes.caption_of(attrs).split(" ")
        w = random_word(rng)
        if w == trigger:
            continue
        shape_at = [i for i, x in enumerate(words) if x in scenes.SHAPES]
        if rng.random() < 0.5 and shape_at:
            words[shape_at[int(rng.integers(len(shape_at)))]] = w
        else:
            words.insert(int(rng.integers(0, len(words) + 1)), w)
        out.append(" ".join(words))
    return out


@torch.no_grad()
def encode_text(te, ids, bs=256):
    return torch.cat([te(ids[i:i + bs])[0] for i in range(0, ids.shape[0], bs)])


def concept_token_ids(ids, pieces, new_id, pad_id):
    """Captions with the trigger word's BPE pieces replaced by one new token id (a learned embedding, as in
    textual inversion / Mix-of-Show's ED-LoRA): [B, 77] -> [B, 77], later tokens shifted left, padded."""
    out = torch.full_like(ids, pad_id)
    n = len(pieces)
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        j = next(k for k in range(1, len(row) - n + 1) if row[k:k + n] == pieces)
        row = row[:j] + [new_id] + row[j + n:]
        out[b, :len(row)] = torch.tensor(row[:ids.shape[1]])
    return out


class ConceptEmbedding(torch.nn.Module):
    """The frozen token table plus one trainable row for the concept's own token (id = vocabulary size)."""

    def __init__(self, table, init):
        super().__init__()
        self.table = table
        self.vector = torch.nn.Parameter(init.clone()[None])  # [1, D]

    def forward(self, ids):
        new = ids == self.table.num_embeddings
        x = self.table(ids.clamp(max=self.table.num_embeddings - 1))
        return torch.where(new[..., None], self.vector.expand_as(x), x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", required=True, choices=shapes.NEW_SHAPES)
    ap.add_argument("--method", required=True, choices=["orthogonal", "lora"])
    ap.add_argument("--block", type=int, default=0, help="column block of the basis (orthogonal)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=None, help="default: rank (scale 1)")
    ap.add_argument("--basis", default="text", choices=["text", "random"],
                    help="text: shared basis from the base text states' least-used directions (kv targets); random: seeded QR")
    ap.add_argument("--targets", default="kv", choices=sorted(lora.TARGET_SETS), help="kv: attn2.to_k/to_v only")
    ap.add_argument("--reg-weight", type=float, default=0.0,
                    help="penalty on ||dW h||^2 / ||W h||^2 for text states h of distractor captions and of the empty prompt (no UNet pass)")
    ap.add_argument("--reg-own", type=float, default=0.0,
                    help="penalty weight on the response to the other tokens (not the trigger) of the concept captions")
    ap.add_argument("--reg-prior", type=int, default=0,
                    help="prior rows per step whose caption gets a distractor word; target: the frozen base UNet's prediction")
    ap.add_argument("--n-reg", type=int, default=4096, help="distractor captions")
    ap.add_argument("--reg-batch", type=int, default=64, help="distractor captions per step in the penalty")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=16, help="concept scenes per step")
    ap.add_argument("--prior-batch", type=int, default=8, help="base scenes per step (prior preservation)")
    ap.add_argument("--n-concept", type=int, default=1024)
    ap.add_argument("--n-prior", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--p-uncond", type=float, default=0.1, help="caption dropout of the prior rows (uncond -> base data)")
    ap.add_argument("--p-uncond-concept", type=float, default=0.0,
                    help="caption dropout of the concept rows (0: the unconditional branch never learns the concept)")
    ap.add_argument("--learn-token", action="store_true",
                    help="the trigger word becomes one new token with a learned embedding, shipped in the file as "
                         "A1111's bundle_emb.<trigger>.string_to_param.*")
    ap.add_argument("--token-reg", type=float, default=0.0,
                    help="penalty on the learned token's text-state energy in the basis' other adapter blocks "
                         "(columns reserved for adapters outside this adapter's own block; orthogonal only)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=os.path.join(PACK, "adapters"))
    ap.add_argument("--unet-ckpt", default=os.path.join(CKPT, "unet.pt"))
    ap.add_argument("--preview", action="store_true", help="write logs/<name>_preview.png (8 held-out prompts)")
    args = ap.parse_args()
    if args.alpha is None:
        args.alpha = float(args.rank)
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
    p_ctx = encode_text(te, p_ids)
    u_ctx = encode_text(te, torch.tensor([tok("")], dtype=torch.long))[0]
    # distractor captions (independent regulariser): base captions with a random non-trigger word, plus ""
    drng = np.random.default_rng(args.seed + 1000)
    d_caps = distractor_captions(args.n_reg, args.concept, drng) + [""]
    d_ids = torch.tensor([tok(c) for c in d_caps], dtype=torch.long)
    d_ctx = encode_text(te, d_ids)
    # trigger token positions in the concept captions (diagnostic: adapter response on the trigger vs elsewhere)
    trig = torch.tensor(tok(args.concept), dtype=torch.long)
    trig = trig[1:int((trig != trig[-1]).sum())]  # pieces between BOS and EOS
    emb = None
    if args.learn_token:
        table = te.text_model.embeddings.token_embedding
        new_id = table.num_embeddings
        c_ids = concept_token_ids(c_ids, trig.tolist(), new_id, int(tok("")[-1]))
        emb = ConceptEmbedding(table, table.weight[trig].mean(0).detach())
        te.text_model.embeddings.token_embedding = emb
        trig = torch.tensor([new_id])
        for p in te.parameters():
            p.requires_grad_(p is emb.vector)
    c_ctx = encode_text(te, c_ids)

    def concept_ctx(idx):
        """Text states of concept captions idx (through the learned token's embedding when it trains)."""
        return te(c_ids[idx])[0] if emb is not None else c_ctx[idx]

    data_s = time.time() - t0
    # 2. adapters on every transformer Linear
    basis_cache, basis_meta = {}, None
    if args.basis == "text":
        if args.targets != "kv":
            raise SystemExit("--basis text is for the text-context layers (--targets kv)")
        # base captions only (fixed seed, no concept): the basis is a property of the base model
        brng = np.random.default_rng(lora.BASIS_SEED)
        b_caps = [scenes.caption_of(scenes.sample_attributes(brng)) for _ in range(lora.TEXT_BASIS_CAPTIONS)] + [""]
        b_states = encode_text(te, torch.tensor([tok(c) for c in b_caps], dtype=torch.long)).reshape(-1, 64).numpy()
        basis_cache[64], _ = lora.text_basis(b_states)
        basis_meta = {"construction": (f"eigenvectors (ascending) of the second-moment matrix of the base text encoder's output "
                                       f"states for {lora.TEXT_BASIS_CAPTIONS} base captions (numpy default_rng({lora.BASIS_SEED}) "
                                       f"scenes.sample_attributes) + the empty prompt, all 77 positions; the {lora.TEXT_BASIS_LOW} "
                                       f"least-used directions rotated by Q of QR(default_rng({lora.BASIS_SEED}).standard_normal(({lora.TEXT_BASIS_LOW}, {lora.TEXT_BASIS_LOW}))), "
                                       f"columns sign-fixed (largest entry positive)"),
                      "basis": "text", "base_unet_step": base_step,
                      "usage": "adapter i of rank r uses down = basis.64[:, i*r:(i+1)*r].T on attn2.to_k / attn2.to_v (input: the 64-d text context)"}
    wrapped = lora.attach(unet, args.method, args.rank, args.alpha, args.block, basis_cache, args.seed, args.targets)
    base_norm = {k: float((d_ctx[:512] @ l.base.weight.t()).pow(2).sum(-1).mean()) for k, l in wrapped.items()}

    def response(h, mask=None):
        """mean over layers of ||dW h||^2 / E||W h||^2 (h: text states [.., 64]); mask selects tokens."""
        tot = 0.0
        for k, l in wrapped.items():
            d = ((h @ l.down.t()) @ l.up.t()).pow(2).sum(-1) * (l.scale ** 2)
            tot = tot + (d[mask].mean() if mask is not None else d.mean()) / base_norm[k]
        return tot / len(wrapped)

    c_trig_mask = torch.zeros(c_ids.shape, dtype=torch.bool)
    for j in range(1, c_ids.shape[1] - len(trig) + 1):
        c_trig_mask[:, j:j + len(trig)] |= (c_ids[:, j:j + len(trig)] == trig).all(1, keepdim=True)

    @torch.no_grad()
    def selectivity():
        hc = concept_ctx(torch.arange(256))
        return {"trigger_tokens": float(response(hc, c_trig_mask[:256])),
                "concept_other_tokens": float(response(hc, ~c_trig_mask[:256])),
                "distractor_captions": float(response(d_ctx[:512])),
                "unconditional": float(response(u_ctx[None])),
                "trigger_energy_in_other_blocks": float(energy_share(hc[c_trig_mask[:256]], others)),
                "trigger_energy_in_own_block": float(energy_share(hc[c_trig_mask[:256]], own))}

    params = [p for l in wrapped.values() for p in (l.down, l.up) if p.requires_grad]
    if emb is not None:
        params.append(emb.vector)
    # the shared basis' adapter columns: this adapter's block, and the blocks reserved for the others
    reserved = basis_cache.get(64, lora.orthogonal_basis(64))[:, :lora.TEXT_BASIS_LOW]
    block = np.s_[args.block * args.rank:(args.block + 1) * args.rank]
    own = torch.from_numpy(reserved[:, block].copy())
    others = torch.from_numpy(np.delete(reserved, block, axis=1))

    def energy_share(h, cols):
        """mean share of the text states' energy (h [N, 64]) inside the span of the orthonormal columns cols"""
        return ((h @ cols).pow(2).sum(-1) / h.pow(2).sum(-1)).mean()
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
        return float((unet(xt, f_t.float(), concept_ctx(fi)) - f_noise).pow(2).mean())

    loss_before = fixed_loss()
    t1 = time.time()
    budget = args.minutes * 60
    ema = None
    step = 0
    for step in range(1, args.steps + 1):
        prog = max(step / args.steps, (time.time() - t1) / budget)
        if prog >= 1.0:
            break
        lr = args.lr * warmup_cosine(step, prog, 30, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        ci = torch.from_numpy(rng.integers(0, c_lat.shape[0], args.batch))
        pi = torch.from_numpy(rng.integers(0, p_lat.shape[0], args.prior_batch))
        x0 = torch.cat([c_lat[ci], p_lat[pi]])
        ctx = torch.cat([concept_ctx(ci), p_ctx[pi]]).clone()
        b = x0.shape[0]
        p_drop = np.r_[np.full(args.batch, args.p_uncond_concept), np.full(args.prior_batch, args.p_uncond)]
        drop = torch.from_numpy(rng.random(b) < p_drop)
        ctx[drop] = u_ctx
        tg = grid[torch.from_numpy(rng.integers(0, 50, b))]
        tu = torch.from_numpy(rng.integers(0, 1000, b))
        t = torch.where(torch.from_numpy(rng.random(b) < 0.6), tg, tu)
        noise = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise
        if args.reg_prior > 0:
            # the last reg_prior prior rows: distractor caption, target = the frozen base UNet's prediction
            k = args.reg_prior
            ri = torch.from_numpy(rng.integers(0, d_ctx.shape[0], k))
            ctx[-k:] = d_ctx[ri]
            with torch.no_grad():
                for l in wrapped.values():
                    l.weight_lambda = 0.0
                base_eps = unet(xt[-k:], t[-k:].float(), ctx[-k:])
                for l in wrapped.values():
                    l.weight_lambda = 1.0
            target = torch.cat([noise[:-k], base_eps])
        eps = unet(xt, t.float(), ctx)
        mse_e = (eps - target).pow(2).mean(dim=(1, 2, 3))
        loss = (mse_e + mse_e * (1 - a.flatten()) / a.flatten()).mean()
        if args.reg_weight > 0:
            ri = torch.from_numpy(rng.integers(0, d_ctx.shape[0], args.reg_batch))
            loss = loss + args.reg_weight * (response(d_ctx[ri]) + response(u_ctx[None]))
        if args.reg_own > 0:
            loss = loss + args.reg_own * response(ctx[:args.batch], ~c_trig_mask[ci])
        if args.token_reg > 0 and emb is not None and args.method == "orthogonal":  # plain LoRA has no basis
            loss = loss + args.token_reg * energy_share(ctx[:args.batch][c_ids[ci] == trig[0]], others)
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
    sel = selectivity()
    print(f"{name} response ||dW h||^2/||W h||^2: " + " ".join(f"{k} {v:.2e}" for k, v in sel.items()), flush=True)
    # 4. export
    meta = {"kind": "adapter", "method": args.method, "concept": args.concept, "trigger": args.concept,
            "basis_seed": lora.BASIS_SEED if args.method == "orthogonal" else "",
            "basis": args.basis if args.method == "orthogonal" else "",
            "basis_file": f"{lora.BASIS_NAME}.safetensors" if args.method == "orthogonal" else "",
            "column_block": args.block if args.method == "orthogonal" else "",
            "columns": f"{args.block * args.rank}:{(args.block + 1) * args.rank}" if args.method == "orthogonal" else "",
            "targets": ",".join(lora.TARGET_SETS[args.targets]), "layers": len(wrapped),
            "regulariser": (f"penalty {args.reg_weight} x ||dW h||^2/||W h||^2 on distractor captions + the same on the empty prompt; "
                            f"concept caption dropout {args.p_uncond_concept}, prior {args.p_uncond}; "
                            f"{args.reg_prior} prior rows/step with distractor captions -> frozen base prediction; "
                            f"own-caption penalty {args.reg_own}; token-reg {args.token_reg}"),
            "base_model": "tiny-shapes", "base_unet_step": base_step, "train_steps": step - 1,
            "train_seconds": round(train_s), "lr": args.lr, "batch": f"{args.batch}+{args.prior_batch} prior",
            "example_prompt": f"a large red {args.concept} in the centre on a blue background"}
    path = os.path.join(args.out, f"{name}.safetensors")
    embeddings = {args.concept: emb.vector.detach().numpy()} if emb is not None else {}
    if emb is not None:
        meta["trigger_token"] = "learned embedding (bundle_emb), token-reg " + str(args.token_reg)
    lora.export_adapter(path, wrapped, args.rank, args.alpha, meta, embeddings)
    if args.method == "orthogonal":
        lora.export_basis(os.path.join(args.out, f"{lora.BASIS_NAME}.safetensors"),
                          {l.base.in_features for l in wrapped.values()}, basis_cache, basis_meta)
    # 5. preview: held-out concept prompts, 4 LCM steps, guidance 2 (as the evaluator)
    if args.preview:
        from train_unet import lcm_sample
        held = shapes.concept_heldout(args.concept, 8)
        ids = torch.tensor([tok(h["caption"]) for h in held], dtype=torch.long)
        unet.eval()
        imgs = lcm_sample(unet, te, ids, 4, sf, vae, guidance=2.0, uncond_ids=torch.tensor([tok("")], dtype=torch.long), seed=1)
        scenes.write_png(os.path.join(HERE, "logs", f"{name}_preview.png"), scenes.grid(list(imgs), 8))
    summary = dict(meta, name=name, response=sel, concept_eps_mse_ema=ema, fixed_batch_eps_mse_before=loss_before, fixed_batch_eps_mse_after=loss_after, data_seconds=round(data_s), file=os.path.basename(path),
                   bytes=os.path.getsize(path))
    json.dump(summary, open(os.path.join(HERE, "logs", f"{name}.json"), "w"), indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

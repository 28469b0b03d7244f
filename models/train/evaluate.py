"""Evaluate the trained pack on held-out captions with the LCM sampler (same math as the service:
epsilon model, x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar), timesteps 999-20i on the 50-step grid).

python3 evaluate.py [--n 128] [--steps 1 2 4]
Attribute proxy per object (from the decoded image): colour (nearest palette colour at the nominal
centre), position (centroid of the object-colour mask), size (mask half-extent), shape (mask fill ratio:
square 1.0, circle 0.785, triangle 0.5); background colour(s) from the corner farthest from objects.
Writes checkpoints/eval.json, logs/eval_steps{1,2,4}.png and logs/parity.json (torch reference outputs
for the onnxruntime parity check in verify-onnx.ts --parity).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from clip_tokenizer import ClipTokenizer  # noqa: E402
from models import MAIN_CONFIG, TextEncoder, UNet  # noqa: E402
from train_unet import PACK, CKPT, LOGS, lcm_sample, load_vae  # noqa: E402

torch.set_num_threads(2)
PAL_NAMES = scenes.COLORS
PAL = np.array([scenes.PALETTE[c] for c in PAL_NAMES], np.float32)


def nearest_color(rgb):
    return PAL_NAMES[int(np.argmin(((PAL - np.asarray(rgb, np.float32)) ** 2).sum(-1)))]


def label_map(img):
    d = ((img[:, :, None, :].astype(np.float32) - PAL[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


SHAPE_CONF = {}


def analyse(img, attrs):
    """Returns dict of booleans for each attribute."""
    H = img.shape[0]
    lab = label_map(img)
    res = {}
    objs = attrs["objects"]
    # background
    corners = {"tl": (0.06, 0.06), "tr": (0.94, 0.06), "bl": (0.06, 0.94), "br": (0.94, 0.94)}

    def patch_color(cx, cy, r=3):
        x, y = int(cx * H), int(cy * H)
        p = img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3)
        return nearest_color(np.median(p, 0))

    def far(cands):
        best, bd = None, -1
        for k in cands:
            cx, cy = corners[k]
            d = min(np.hypot(cx - scenes.POSITIONS[o["position"]][0], cy - scenes.POSITIONS[o["position"]][1]) for o in objs)
            if d > bd:
                best, bd = k, d
        return corners[best]

    bg = attrs["background"]
    if bg["kind"] == "plain":
        res["background"] = patch_color(*far(corners)) == bg["color"]
    else:
        if bg["direction"] == "vertical":
            a, b = far(["tl", "tr"]), far(["bl", "br"])
        else:
            a, b = far(["tl", "bl"]), far(["tr", "br"])
        res["background"] = patch_color(*a) == bg["from"] and patch_color(*b) == bg["to"]
    ok_c = ok_p = ok_s = ok_z = True
    for o in objs:
        px, py = scenes.POSITIONS[o["position"]]
        col = patch_color(px, py, 2)
        ok_c &= col == o["color"]
        # mask of the object's colour in a window around the nominal position
        ci = PAL_NAMES.index(o["color"])
        yy, xx = np.mgrid[0:H, 0:H]
        win = (np.abs(xx / H - px) < 0.24) & (np.abs(yy / H - py) < 0.24)
        m = (lab == ci) & win
        if m.sum() < 8:
            ok_p = ok_s = ok_z = False
            continue
        ys, xs = np.nonzero(m)
        cx, cy = (xs.mean() + 0.5) / H, (ys.mean() + 0.5) / H
        pos = min(scenes.POSITIONS, key=lambda k: np.hypot(scenes.POSITIONS[k][0] - cx, scenes.POSITIONS[k][1] - cy))
        ok_p &= pos == o["position"]
        x0, x1 = np.percentile(xs, [1, 99])
        y0, y1 = np.percentile(ys, [1, 99])
        r = ((x1 - x0 + 1) + (y1 - y0 + 1)) / 4 / H
        ok_z &= ("large" if r > 0.14 else "small") == o["size"]
        # shape: best IoU against templates fitted to the mask's bounding box
        bx, by = (x0 + x1 + 1) / 2 / H, (y0 + y1 + 1) / 2 / H
        best, biou = None, -1
        gx, gy = (xx + 0.5) / H, (yy + 0.5) / H
        for sh in scenes.SHAPES:
            for f in (0.9, 1.0, 1.1):
                tm = (scenes._sdf(sh, gx, gy, bx, by, r * f) < 0) & win
                iou = (tm & m).sum() / max(1, (tm | m).sum())
                if iou > biou:
                    best, biou = sh, iou
        ok_s &= best == o["shape"]
        SHAPE_CONF[(o["shape"], best)] = SHAPE_CONF.get((o["shape"], best), 0) + 1
    res.update(color=ok_c, position=ok_p, size=ok_z, shape=ok_s)
    res["all"] = all(res.values())
    return res


def summarize(rs):
    return {k: round(float(np.mean([r[k] for r in rs])), 3) for k in rs[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--guidance", type=float, default=1.0)
    args = ap.parse_args()
    tok = ClipTokenizer(os.path.join(PACK, "tokenizer"))
    ck = torch.load(os.path.join(CKPT, "unet.pt"), map_location="cpu")
    te = TextEncoder(len(tok.encoder), **MAIN_CONFIG["text"])
    unet = UNet(**MAIN_CONFIG["unet"])
    te.load_state_dict(ck["text_encoder"])
    unet.load_state_dict(ck["unet"])
    te.eval()
    unet.eval()
    sf = ck["scaling_factor"]
    vae = load_vae()
    held = json.load(open(os.path.join(PACK, "heldout.json")))[: args.n]
    out = {"n": len(held), "guidance": args.guidance, "unet_step": ck["step"]}
    # ground truth upper bound (real images through the VAE)
    with torch.no_grad():
        gt = []
        for h in held:
            img = scenes.scene(h["seed"])[0]
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
            r = vae.decoder(vae.encoder(x)[:, :4]).clamp(-1, 1)
            gt.append(analyse(((r[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), h["attributes"]))
    out["vae_reconstruction"] = summarize(gt)
    print("shape confusion (true, predicted) on VAE reconstructions", dict(sorted(SHAPE_CONF.items())))
    SHAPE_CONF.clear()
    print("vae recon", out["vae_reconstruction"], flush=True)
    uncond = torch.tensor([tok("")], dtype=torch.long)
    for st in args.steps:
        t0 = time.time()
        rs, imgs = [], []
        for i in range(0, len(held), 32):
            chunk = held[i:i + 32]
            ids = torch.tensor([tok(h["caption"]) for h in chunk], dtype=torch.long)
            ims = lcm_sample(unet, te, ids, st, sf, vae, guidance=args.guidance, uncond_ids=uncond, seed=100 + i)
            for h, im in zip(chunk, ims):
                rs.append(analyse(im, h["attributes"]))
            imgs += list(ims)
        out[f"steps{st}"] = summarize(rs)
        out[f"steps{st}"]["seconds"] = round(time.time() - t0, 1)
        print(f"steps {st}", out[f"steps{st}"], flush=True)
        scenes.write_png(os.path.join(LOGS, f"eval_steps{st}.png"), scenes.grid(imgs[:32], 8))
    with open(os.path.join(CKPT, "eval.json"), "w") as f:
        json.dump(out, f, indent=1)
    # parity reference for onnxruntime: caption -> text encoder, unet at t=999 on fixed noise, decoder
    with torch.no_grad():
        cap = held[0]["caption"]
        ids = torch.tensor([tok(cap)], dtype=torch.long)
        hs, pooled = te(ids)
        g = torch.Generator().manual_seed(7)
        x = torch.randn(1, 4, 12, 16, generator=g)
        eps = unet(x, torch.tensor([999.0]), hs)
        dec = vae.decoder(x)
        img = torch.rand(1, 3, 96, 128, generator=g) * 2 - 1
        enc = vae.encoder(img)[:, :4]
    par = {"caption": cap, "input_ids": ids[0].tolist(), "pooler_output": pooled[0].tolist(),
           "last_hidden_state_row0": hs[0, 0].tolist(), "sample": x.flatten().tolist(), "sample_dims": [1, 4, 12, 16],
           "timestep": 999.0, "out_sample": eps.flatten().tolist(), "decoder_out_first64": dec.flatten()[:64].tolist(),
           "encoder_in": img.flatten().tolist(), "encoder_in_dims": [1, 3, 96, 128], "encoder_out": enc.flatten().tolist()}
    with open(os.path.join(LOGS, "parity.json"), "w") as f:
        json.dump(par, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Train the prompt router: a measured-label linear classifier over the text encoder's pooled output.

This is the simpler method the issue allows, not APTP's hypernetwork + Sinkhorn-balanced codes + contrastive
loss (that one is learnt jointly with the pruning gates, which does not fit this CPU budget):
 1. --n training captions (scenes 0..n-1 of the base training cache) are rendered by every expert and the
    full model from the same noise: LCM 4 steps, CFG full, guidance 2 (the evaluator's defaults)
 2. each image is scored by the pack's attribute proxy (evaluate.py analyse: background, colour, position,
    size, shape), summed over --seeds noise draws
 3. label = the smallest expert whose score is >= the full model's score - --tolerance (with --per-seed: on every draw)
 4. multinomial logistic regression (L2) on standardised pooled outputs; standardisation is folded into the
    exported weights, so the router is logits = W p + b on the raw pooled output, argmax = the expert
 5. writes checkpoints/router.pt {weights [K,D], bias [K], order (expert index per output), stats}
Expert indices: 0 = the full model, 1.. = checkpoints/experts.pt in its order.

python3 train_router.py [--n 512] [--seeds 2] [--per-seed] [--tolerance 0]
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import common
import pruning
import scenes
from evaluate import analyse
from train_unet import lcm_sample, load_vae

#: Regularisation of the logistic regression (on standardised inputs).
L2 = 1e-3
#: Share of the labelled prompts held out to report the router's own accuracy.
VALIDATION = 0.2
ATTRIBUTES = ("background", "color", "position", "size", "shape")


def load_models(teacher, path=common.EXPERTS_CKPT):
    ck = torch.load(path, map_location="cpu")
    students = [pruning.rebuild(teacher, plan, state).eval() for plan, state in zip(ck["plans"], ck["states"])]
    return [teacher] + students, [1.0] + list(ck["macs"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.0)
    ap.add_argument("--per-seed", action="store_true", help="adequate only if >= the full model on every noise draw")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", default=common.BASE_CKPT)
    ap.add_argument("--experts", default=common.EXPERTS_CKPT)
    ap.add_argument("--out", default=common.ROUTER_CKPT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = common.logger("train_router.log")
    teacher, te, sf, _ = common.load_teacher(args.teacher)
    models, macs = load_models(teacher, args.experts)
    vae = load_vae()
    _, ids = common.load_cache()
    ids = ids[: args.n]
    attrs = [scenes.scene(i)[2] for i in range(len(ids))]
    tok = common.tokenizer()
    uncond = torch.tensor([tok("")], dtype=torch.long)

    # 1-2. scores [n, models]
    t0 = time.time()
    scores = np.zeros((len(ids), len(models), args.seeds), np.float32)
    per_attr = np.zeros((len(models), len(ATTRIBUTES)), np.float64)
    for start in range(0, len(ids), args.chunk):
        chunk = ids[start:start + args.chunk]
        for s in range(args.seeds):
            for k, m in enumerate(models):
                imgs = lcm_sample(m, te, chunk, args.steps, sf, vae, guidance=args.guidance, uncond_ids=uncond,
                                  seed=1000 * s + start)
                for j, img in enumerate(imgs):
                    r = analyse(img, attrs[start + j])
                    scores[start + j, k, s] = sum(r[a] for a in ATTRIBUTES)
                    per_attr[k] += [r[a] for a in ATTRIBUTES]
        P(f"scored {min(len(ids), start + args.chunk)}/{len(ids)} in {time.time() - t0:.0f}s")
    per_attr /= len(ids) * args.seeds
    for k in range(len(models)):
        P(f"model {k} MACs {macs[k]:.3f} mean attribute accuracy {per_attr[k].mean():.3f} " +
          " ".join(f"{a} {v:.3f}" for a, v in zip(ATTRIBUTES, per_attr[k])))

    # 3. labels: the smallest adequate expert
    by_size = sorted(range(len(models)), key=lambda k: macs[k])
    ok = scores >= scores[:, :1] - args.tolerance  # [n, models, seeds]
    adequate = ok.all(2) if args.per_seed else scores.sum(2) >= scores[:, :1].sum(2) - args.tolerance
    labels = np.array([next(k for k in by_size if adequate[i, k]) for i in range(len(ids))])
    scores = scores.sum(2)
    P("label distribution " + " ".join(f"{k}:{int((labels == k).sum())}" for k in range(len(models))))

    # 4. logistic regression on standardised pooled outputs
    with torch.no_grad():
        pooled = torch.cat([te(ids[i:i + 256])[1] for i in range(0, len(ids), 256)])
    mu, sd = pooled.mean(0), pooled.std(0) + 1e-6
    x = (pooled - mu) / sd
    y = torch.from_numpy(labels).long()
    rng = np.random.default_rng(0)
    perm = torch.from_numpy(rng.permutation(len(ids)))
    n_val = int(VALIDATION * len(ids))
    val, tr = perm[:n_val], perm[n_val:]

    def fit(rows):
        w = torch.zeros(len(models), x.shape[1], requires_grad=True)
        b = torch.zeros(len(models), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(x[rows] @ w.T + b, y[rows]) + L2 * w.pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        return w.detach(), b.detach()

    w, b = fit(tr)
    pred = (x[val] @ w.T + b).argmax(1)
    acc = float((pred == y[val]).float().mean())
    routed_score = float(scores[val.numpy(), pred.numpy()].mean())
    full_score = float(scores[val.numpy(), 0].mean())
    routed_macs = float(np.mean([macs[k] for k in pred.numpy()]))
    P(f"validation: label accuracy {acc:.3f}; routed score {routed_score:.3f} vs full {full_score:.3f} "
      f"(of {5 * args.seeds}); routed mean MACs {routed_macs:.3f}")
    w, b = fit(torch.arange(len(ids)))  # final router on every labelled prompt
    weights = w / sd[None, :]  # fold the standardisation: w (p - mu) / sd + b = (w / sd) p + (b - (w / sd) mu)
    bias = b - (weights * mu[None, :]).sum(1)
    pred_all = (pooled @ weights.T + bias).argmax(1)
    P("routing of the labelled prompts " + " ".join(f"{k}:{int((pred_all == k).sum())}" for k in range(len(models))))

    # 5. save
    torch.save({"weights": weights, "bias": bias, "order": list(range(len(models))), "macs": macs,
                "stats": {"n": len(ids), "seeds": args.seeds, "tolerance": args.tolerance, "steps": args.steps,
                          "guidance": args.guidance, "validation_label_accuracy": acc,
                          "validation_routed_score": routed_score, "validation_full_score": full_score,
                          "validation_routed_macs": routed_macs,
                          "label_counts": [int((labels == k).sum()) for k in range(len(models))],
                          "attribute_accuracy": per_attr.tolist()}}, args.out)
    P(f"saved {args.out}")


if __name__ == "__main__":
    main()

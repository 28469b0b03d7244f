"""Derive pruned experts from the trained tiny-shapes UNet and distil them from it (APTP, REFERENCE §2).

python3 train_experts.py [--targets 0.7 0.6 0.45] [--skip-blocks 0 0 3] [--minutes 12] [--batch 32]
 1. teacher: models/train/checkpoints/unet.pt (EMA UNet + text encoder + scaling factor);
    data: the base training's latent cache (models/train/cache/latents_N.npz, scene i = seed i), captioned
    like the base training (captions.py: a new phrasing of the scene each time)
 2. first-order Taylor importance of every prunable 16-channel unit and of every attention block (pruning.py)
    on the teacher's own eps loss
 3. one plan per MAC target: the --skip-blocks least important attention blocks skipped whole, then greedy,
    global over ResNet channels, attention heads and FF units in 16s; materialised as physically smaller dense UNets
 4. distillation of all students in one loop sharing the teacher's forward pass: eps MSE to the teacher,
    weighted like the base training (eps error + x0 error = (1 + (1 - abar) / abar) x eps error), 10%
    unconditional rows (CFG), timesteps 60% on the LCM grid; EMA weights are kept
 5. writes checkpoints/experts.pt {targets, plans, states, macs, params, steps}
"""
import argparse
import copy
import os
import time

import numpy as np
import torch

import common  # noqa: I100  (puts models/train on sys.path)
import captions
import pruning
import scenes
from models import alphas_cumprod, warmup_cosine

#: Batches used for the Taylor importance estimate (each ~0.5 s on 2 cores).
IMPORTANCE_BATCHES = int(os.environ.get("IMPORTANCE_BATCHES", "24"))
#: Probability of an unconditional (empty prompt) row, as in the base training (CFG needs it).
P_UNCOND = 0.1
#: Probability of drawing t on the 50-step LCM grid (the timesteps the service runs) instead of 0..999.
P_GRID = 0.6


def draw_batch(rng, lat, ids, uncond, batch, abar, grid):
    """ids: a function scene index -> token ids (a fresh phrasing each call)."""
    idx = torch.from_numpy(rng.integers(0, lat.shape[0], batch))
    x0 = lat[idx]
    bid = torch.tensor([ids(int(i)) for i in idx], dtype=torch.long)
    bid[torch.from_numpy(rng.random(batch) < P_UNCOND)] = uncond
    tg = grid[torch.from_numpy(rng.integers(0, len(grid), batch))]
    tu = torch.from_numpy(rng.integers(0, 1000, batch))
    t = torch.where(torch.from_numpy(rng.random(batch) < P_GRID), tg, tu)
    noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
    a = abar[t][:, None, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return xt, t.float(), bid, noise, a.flatten()


def weighted_mse(pred, target, a):
    """eps error + implied x0 error, per the base training's loss."""
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return (mse * (1 + (1 - a) / a)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.6, 0.45])
    ap.add_argument("--skip-blocks", type=int, nargs="+", help="per target: attention blocks skipped whole (default 0s)")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--teacher", default=common.BASE_CKPT)
    ap.add_argument("--out", default=common.EXPERTS_CKPT)
    ap.add_argument("--resume", help="continue distilling the students of this experts.pt (plans kept)")
    ap.add_argument("--only", type=int, nargs="+", help="with --resume: indices of the students to train further")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    P = common.logger("train_experts.log")

    # 1. teacher and data
    teacher, te, sf, teacher_step = common.load_teacher(args.teacher)
    lat, _ = common.load_cache()
    lat = lat * sf
    tok = common.tokenizer()
    attrs = [scenes.scene_attributes(i) for i in range(lat.shape[0])]
    cap_rng = np.random.default_rng(args.seed + 1)

    def ids(i):
        return tok(captions.caption(attrs[i], cap_rng))

    uncond = torch.tensor(tok(""), dtype=torch.long)
    abar = alphas_cumprod()
    grid = torch.tensor([999 - 20 * i for i in range(50)])
    full_macs = pruning.count_macs(teacher)
    P(f"teacher step {teacher_step} params {pruning.count_params(teacher)} MACs {full_macs} args {vars(args)}")

    if args.resume:
        # 2-3. students of an earlier run, continued
        ck = torch.load(args.resume, map_location="cpu")
        plans, prior_steps = ck["plans"], ck["steps"]
        prior_steps = prior_steps if isinstance(prior_steps, list) else [prior_steps] * len(plans)
        all_students = [pruning.rebuild(teacher, plan, state) for plan, state in zip(plans, ck["states"])]
        train_idx = args.only or list(range(len(plans)))
        P(f"resuming {args.resume}: training students {train_idx} (prior steps {prior_steps})")
    else:
        # 2. importance (gradients through a trainable copy of the teacher)
        probe = copy.deepcopy(teacher)
        for p in probe.parameters():
            p.requires_grad_(True)
        batches = []
        with torch.no_grad():
            for _ in range(IMPORTANCE_BATCHES):
                xt, t, bid, noise, a = draw_batch(rng, lat, ids, uncond, args.batch, abar, grid)
                batches.append((xt, t, te(bid)[0], noise, a))
        t0 = time.time()
        loss_fn = lambda u, b: weighted_mse(u(b[0], b[1], b[2]), b[3], b[4])  # noqa: E731
        importance = pruning.taylor_importance(probe, batches, loss_fn)
        by_block = pruning.block_importance(probe, batches, loss_fn)
        del probe
        ranked = sorted(by_block, key=by_block.get)
        P(f"importance on {len(batches)} batches in {time.time() - t0:.0f}s; blocks, least important first: "
          + ", ".join(f"{b} {by_block[b]:.3g}" for b in ranked))

        # 3. plans and students
        plans, students = [], []
        for target, n_skip in zip(args.targets, args.skip_blocks or [0] * len(args.targets)):
            plan, ratio = pruning.plan_for_budget(teacher, importance, target, skip=ranked[:n_skip])
            s = pruning.materialise(teacher, plan)
            for p in s.parameters():
                p.requires_grad_(True)
            s.train()
            plans.append(plan)
            students.append(s)
            P(f"target {target}: MACs {ratio:.3f} params {pruning.count_params(s)} kept {pruning.describe(teacher, plan)}")
        all_students, prior_steps, train_idx = students, [0] * len(students), list(range(len(students)))
    for s in all_students:
        for p in s.parameters():
            p.requires_grad_(True)
        s.train()
    students = [all_students[k] for k in train_idx]
    emas = [copy.deepcopy(s).eval() for s in students]
    params = [list(s.parameters()) for s in students]
    opts = [torch.optim.AdamW(p, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99)) for p in params]

    # 4. distillation
    t0 = time.time()
    max_s = args.minutes * 60
    ema_loss = [None] * len(students)
    step = 0
    for step in range(1, args.steps + 1):
        prog = max(step / args.steps, (time.time() - t0) / max_s)
        if prog >= 1.0:
            break
        lr = args.lr * warmup_cosine(step, prog, 50, 0.05)
        xt, t, bid, _, a = draw_batch(rng, lat, ids, uncond, args.batch, abar, grid)
        with torch.no_grad():
            ehs = te(bid)[0]
            target = teacher(xt, t, ehs)
        decay = min(0.995, (1 + step) / (10 + step))
        for k, (s, opt, e) in enumerate(zip(students, opts, emas)):
            for gp in opt.param_groups:
                gp["lr"] = lr
            loss = weighted_mse(s(xt, t, ehs), target, a)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params[k], 1.0)
            opt.step()
            with torch.no_grad():
                for pe, p in zip(e.parameters(), s.parameters()):
                    pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
            v = float(loss)
            ema_loss[k] = v if ema_loss[k] is None else 0.95 * ema_loss[k] + 0.05 * v
        if step % 25 == 0:
            el = time.time() - t0
            P(f"step {step} lr {lr:.2e} loss_ema " + " ".join(f"{x:.4f}" for x in ema_loss) + f" elapsed {el:.0f}s")
    P(f"distilled {step} steps in {time.time() - t0:.0f}s")

    # 5. save (students not trained in this run are kept as they were)
    final = list(all_students)
    steps = list(prior_steps)
    for k, e in zip(train_idx, emas):
        final[k] = e
        steps[k] += step
    final = [m.eval() for m in final]
    os.makedirs(common.OUT, exist_ok=True)
    torch.save({
        "targets": args.targets,
        "skip_blocks": args.skip_blocks,
        "plans": plans,
        "states": [m.state_dict() for m in final],
        "macs": [pruning.count_macs(m) / full_macs for m in final],
        "params": [pruning.count_params(m) for m in final],
        "full_macs": full_macs,
        "full_params": pruning.count_params(teacher),
        "steps": steps,
        "teacher_step": teacher_step,
        "final_loss": ema_loss,
    }, args.out)
    P(f"saved {args.out}")


if __name__ == "__main__":
    main()

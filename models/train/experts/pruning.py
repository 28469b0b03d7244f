"""Structured pruning of the tiny-shapes UNet into physically smaller dense experts (APTP, REFERENCE §2).

Prunable units, each CHANNEL_UNIT (16) channels wide, so every pruned layer keeps a multiple of 16 channels: the
CPU conv kernels pad channel counts to 16, and odd counts (4, 6, 20 ...) cost as much as the next multiple (issue 19).
Each removal is exact (the unit's contribution is one set of input columns of one layer):
  resnet  ResnetBlock2D inner channels in 16s (conv1 rows, time_emb_proj rows, norm2 channels, conv2 input
          columns). The residual stream width never changes. Where 16 channels are whole GroupNorm groups of
          norm2 (groups of 4 or 8) the kept groups' statistics are exact; the 48-channel blocks (groups of 6)
          get groups of 8 after pruning, which distillation absorbs.
  heads   Attention heads of attn1 / attn2 (head_dim 16: to_q/to_k/to_v rows, to_out input columns).
  ff      FeedForward hidden units in 16s (GEGLU value+gate rows, net.2 input columns).
Whole blocks: a plan may also skip Transformer2DModel blocks entirely (APTP's block-skip bits): the residual
stream passes through, and the graph loses the block's ~50 small nodes. On this CPU a UNet call has about 1 ms of
fixed per-node cost (REFERENCE section 9), so skipping blocks is what makes a small expert fast, not only small.
A plan maps unit name -> kept group indices (and SKIP -> skipped block names); `materialise(unet, plan)` slices
the weights into a new, smaller module tree that uses the same classes (so forward code and ONNX node names are
unchanged).

Importance: first-order Taylor estimate of the loss change when a group's columns are zeroed,
I_g = E_batches[(sum_{w in cols(g)} w * dL/dw)^2] (Molchanov et al. 2019), comparable across layers.
Groups are removed greedily by importance per MAC saved until the MAC target is met.

MACs: counted from the actual shapes with forward hooks at batch 1 on 16x16 latents (128x128 images):
conv = out elements x in/groups x k x k; linear = out elements x in features; attention = the two
matmuls (QK^T and AV), heads x n x m x head_dim each. Norms and activations are not counted.
"""
import copy
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from models import Attention, FeedForward, ResnetBlock2D, Transformer2DModel  # noqa: E402

#: Channels per prunable unit (resnet inner channels, FF hidden units; attention heads are 16 wide).
CHANNEL_UNIT = 16
#: GroupNorm group size after pruning where 16 channels are not whole groups of the original norm.
PRUNED_GN_GROUP = 8
#: Plan key listing the Transformer2DModel blocks an expert skips.
SKIP = "skip_blocks"
#: Latent side used for MAC counting (128 px images / 8).
MAC_LATENT = 16
#: Text context length (CLIP's 77 tokens).
CONTEXT_TOKENS = 77


# ----------------------------------------------------------------------------- units


class SkippedBlock(nn.Module):
    """A Transformer2DModel removed whole: returns its input (the block's residual contribution is dropped)."""

    def forward(self, x, ctx):
        return x


def blocks(unet):
    """[(name, module)] of the blocks a plan may skip, in module order."""
    return [(name, m) for name, m in unet.named_modules() if isinstance(m, Transformer2DModel)]


def units(unet):
    """[(name, kind, module, n_groups)] for every prunable unit, in module order."""
    out = []
    for name, m in unet.named_modules():
        if isinstance(m, ResnetBlock2D):
            out.append((name, "resnet", m, m.conv1.out_channels // CHANNEL_UNIT))
        elif isinstance(m, Attention):
            out.append((name, "heads", m, m.heads))
        elif isinstance(m, FeedForward):
            out.append((name, "ff", m, m.net[2].in_features // CHANNEL_UNIT))
    return out


def group_size(kind, m, n_groups):
    if kind == "resnet":
        return m.conv1.out_channels // n_groups
    if kind == "heads":
        return m.head_dim
    return m.net[2].in_features // n_groups


def _cols(kind, m):
    """The weight whose input columns carry a unit's contribution (zeroing them removes the unit)."""
    if kind == "resnet":
        return m.conv2.weight  # [cout, inner, 3, 3]
    if kind == "heads":
        return m.to_out[0].weight  # [dim, heads * head_dim]
    return m.net[2].weight  # [dim, inner]


# ----------------------------------------------------------------------------- MACs


def count_macs(unet, latent=MAC_LATENT, ctx_dim=None, per_module=False):
    """Multiply-accumulates of one UNet call, batch 1, latent x latent, 77 context tokens."""
    macs = {}
    hooks = []

    def conv_hook(name):
        def f(m, inp, out):
            macs[name] = macs.get(name, 0) + out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        return f

    def linear_hook(name):
        def f(m, inp, out):
            macs[name] = macs.get(name, 0) + out.numel() * m.in_features
        return f

    def attn_hook(name):
        def f(m, inp, out):
            x = inp[0]
            ctx = inp[1] if len(inp) > 1 and inp[1] is not None else x
            n, mm = x.shape[1], ctx.shape[1]
            macs[name + ".matmul"] = macs.get(name + ".matmul", 0) + 2 * x.shape[0] * m.heads * n * mm * m.head_dim
        return f

    for name, m in unet.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook(name)))
        elif isinstance(m, Attention):
            hooks.append(m.register_forward_hook(attn_hook(name)))
    d = ctx_dim or unet.config["cross_attention_dim"]
    with torch.no_grad():
        unet(torch.zeros(1, 4, latent, latent), torch.tensor([500.0]), torch.zeros(1, CONTEXT_TOKENS, d))
    for h in hooks:
        h.remove()
    return macs if per_module else sum(macs.values())


def unit_macs(unet, per_module):
    """MACs that scale linearly with a unit's kept groups (removed entirely at 0 groups)."""
    out = {}
    for name, kind, m, g in units(unet):
        if kind == "resnet":
            keys = [f"{name}.conv1", f"{name}.conv2", f"{name}.time_emb_proj"]
        elif kind == "heads":
            keys = [f"{name}.to_q", f"{name}.to_k", f"{name}.to_v", f"{name}.to_out.0", f"{name}.matmul"]
        else:
            keys = [f"{name}.net.0.proj", f"{name}.net.2"]
        # conv2's MACs scale with its input channels (the unit), its output is the residual stream
        out[name] = sum(per_module.get(k, 0) for k in keys)
    return out


# ----------------------------------------------------------------------------- importance


def taylor_importance(unet, batches, loss_fn):
    """{unit name: tensor [n_groups]} first-order Taylor importance of each group."""
    us = units(unet)
    scores = {name: torch.zeros(g) for name, _, _, g in us}
    unet.zero_grad(set_to_none=True)
    for batch in batches:
        unet.zero_grad(set_to_none=True)
        loss = loss_fn(unet, batch)
        loss.backward()
        for name, kind, m, g in us:
            w = _cols(kind, m)
            contrib = (w * w.grad).detach()
            contrib = contrib.transpose(0, 1).reshape(w.shape[1], -1).sum(1)  # per input column
            scores[name] += contrib.reshape(g, -1).sum(1) ** 2
    unet.zero_grad(set_to_none=True)
    return {k: v / max(1, len(batches)) for k, v in scores.items()}


def block_importance(unet, batches, loss_fn):
    """{block name: E_batches[(sum dL/dout * (out - in))^2]}: the first-order loss change of skipping the block
    (its output becomes its input), on the same scale as taylor_importance."""
    found = blocks(unet)
    scores = {name: 0.0 for name, _ in found}
    seen = {}

    def hook(name):
        def f(m, inp, out):
            out.retain_grad()
            seen[name] = (inp[0].detach(), out)
        return f

    hooks = [m.register_forward_hook(hook(name)) for name, m in found]
    for batch in batches:
        unet.zero_grad(set_to_none=True)
        loss_fn(unet, batch).backward()
        for name, (x, out) in seen.items():
            scores[name] += float((out.grad * (out.detach() - x)).sum()) ** 2
    for h in hooks:
        h.remove()
    unet.zero_grad(set_to_none=True)
    return {k: v / max(1, len(batches)) for k, v in scores.items()}


def plan_for_budget(unet, importance, target, min_keep=None, skip=()):
    """Greedy global pruning: drop the group with the least importance per MAC saved until the UNet's MACs
    are <= target x the full MACs. min_keep: unit kind -> fraction of groups always kept; every unit keeps at
    least one group (a 25% floor everywhere cost 2x the distillation loss at 0.45 MACs on a step-500 teacher).
    `skip`: blocks skipped whole first (their MACs count as saved; their units are not candidates)."""
    min_keep = min_keep or {"resnet": 0.0, "heads": 0.0, "ff": 0.0}
    full = count_macs(unet)
    base = materialise(unet, {SKIP: list(skip)}) if skip else unet
    per_module = count_macs(base, per_module=True)
    scalable = unit_macs(base, per_module)
    info = {name: (kind, g) for name, kind, _, g in units(base)}
    kept = {name: list(range(g)) for name, (kind, g) in info.items()}
    candidates = []
    for name, (kind, g) in info.items():
        saving = scalable[name] / g
        for j in range(g):
            candidates.append((float(importance[name][j]) / max(saving, 1.0), name, j, saving))
    candidates.sort()
    macs = sum(per_module.values())
    for _, name, j, saving in candidates:
        if macs <= target * full:
            break
        kind, g = info[name]
        floor = max(1, int(round(min_keep[kind] * g)))
        if len(kept[name]) <= floor:
            continue
        kept[name].remove(j)
        macs -= saving
    if skip:
        kept[SKIP] = list(skip)
    return kept, macs / full


# ----------------------------------------------------------------------------- materialise


def _sliced(src, rows=None, cols=None):
    """A copy of a Linear or Conv2d keeping output channels `rows` and input channels `cols` (None: all)."""
    w = src.weight.data
    b = src.bias.data if src.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    if isinstance(src, nn.Conv2d):
        out = nn.Conv2d(w.shape[1], w.shape[0], src.kernel_size, stride=src.stride, padding=src.padding, bias=b is not None)
    else:
        out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    out.weight.data.copy_(w)
    if b is not None:
        out.bias.data.copy_(b)
    return out


def _channels(groups, size):
    return torch.tensor([g * size + k for g in groups for k in range(size)], dtype=torch.long)


def materialise(unet, plan):
    """A deep copy of `unet` with its SKIP blocks removed and every other unit sliced to its kept groups
    (plan: name -> kept group indices)."""
    out = copy.deepcopy(unet)
    for name in plan.get(SKIP, []):
        parent, _, child = name.rpartition(".")
        holder = out.get_submodule(parent)
        if isinstance(holder, nn.ModuleList):
            holder[int(child)] = SkippedBlock()
        else:
            setattr(holder, child, SkippedBlock())
    for name, kind, m, g in units(out):
        keep = sorted(plan.get(name, range(g)))
        if len(keep) == g:
            continue
        size = group_size(kind, m, g)
        idx = _channels(keep, size)
        if kind == "resnet":
            m.conv1 = _sliced(m.conv1, rows=idx)
            m.time_emb_proj = _sliced(m.time_emb_proj, rows=idx)
            gn = m.norm2.num_channels // m.norm2.num_groups  # channels per group of the original norm
            norm = nn.GroupNorm(len(idx) // (gn if size % gn == 0 else PRUNED_GN_GROUP), len(idx), eps=m.norm2.eps)
            norm.weight.data.copy_(m.norm2.weight.data[idx])
            norm.bias.data.copy_(m.norm2.bias.data[idx])
            m.norm2 = norm
            m.conv2 = _sliced(m.conv2, cols=idx)
        elif kind == "heads":
            m.to_q = _sliced(m.to_q, rows=idx)
            m.to_k = _sliced(m.to_k, rows=idx)
            m.to_v = _sliced(m.to_v, rows=idx)
            m.to_out[0] = _sliced(m.to_out[0], cols=idx)
            m.heads = len(keep)
        else:
            inner = m.net[2].in_features
            proj = m.net[0].proj  # rows [value ; gate], chunked in halves by GEGLU
            m.net[0].proj = _sliced(proj, rows=torch.cat([idx, idx + inner]))
            m.net[2] = _sliced(m.net[2], cols=idx)
    out.prune_plan = {k: sorted(v) for k, v in plan.items()}
    return out


def rebuild(full_unet, plan, state_dict):
    """Re-creates a materialised expert from its plan and trained weights."""
    m = materialise(full_unet, plan)
    m.load_state_dict(state_dict)
    return m


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def describe(unet, plan):
    """Per unit kept/total groups (skipped blocks: 'skipped'), for logs and the expert's config.json."""
    skipped = plan.get(SKIP, [])
    out = {name: "skipped" for name in skipped}
    out.update({name: f"{len(plan.get(name, range(g)))}/{g}" for name, kind, _, g in units(unet)
                if not any(name.startswith(b + ".") for b in skipped)})
    return out

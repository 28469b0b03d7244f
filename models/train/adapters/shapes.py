"""New shapes for the concept adapters: diamond, heart, ring (absent from the base tiny-shapes training).

Extends models/train/scenes.py without editing it: `scenes._sdf` is wrapped so that `scenes.render`
draws the new shapes with the same anti-aliasing, palette, positions, sizes and jitter. Base shapes
render exactly as before (the wrapper falls through to the original function).

Geometry (half-extent r, centre (cx, cy), y downwards), also in CONCEPT_GEOMETRY:
  diamond: a square rotated 45 degrees, vertices at distance r from the centre (|x| + |y| <= r)
  star:  5 points, pointing up, outer radius r, inner radius 0.5 r (drawn, but not a concept: the pack's
         VAE (16x16x4 latents) reconstructs a star as a blob, so no UNet adapter can teach it)
  heart: the classic parametric heart (x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t),
         scaled so its half width is r, centred on its bounding box
  ring:  annulus, outer radius r, inner radius 0.5 r
"""
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import scenes  # noqa: E402

NEW_SHAPES = ["diamond", "heart", "ring"]
STAR_INNER = 0.5
RING_INNER = 0.5
CONCEPT_GEOMETRY = {
    "diamond": "square rotated 45 degrees, |x| + |y| <= r",
    "star": f"5 points, pointing up, outer radius r, inner radius {STAR_INNER} r",
    "heart": "parametric heart x=16sin^3t, y=13cost-5cos2t-2cos3t-cos4t (y up), half width r, centred on its box",
    "ring": f"annulus, outer radius r, inner radius {RING_INNER} r",
}


def star_polygon(cx, cy, r):
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rad = r if k % 2 == 0 else STAR_INNER * r
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def heart_polygon(cx, cy, r, n=96):
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y downwards
    y = y - (y.max() + y.min()) / 2
    s = r / 16.0
    return list(zip(cx + s * x, cy + s * y))


def polygon_sdf(xx, yy, pts):
    """Exact signed distance to a simple polygon (negative inside), even-odd rule."""
    d = np.full(xx.shape, np.inf, np.float32)
    inside = np.zeros(xx.shape, bool)
    n = len(pts)
    for i in range(n):
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = xx - ax, yy - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        d = np.minimum(d, np.hypot(wx - ex * t, wy - ey * t))
        cond = (ay > yy) != (by > yy)
        xint = ax + (yy - ay) * ex / (ey if ey != 0 else 1e-12)
        inside ^= cond & (xx < xint)
    return np.where(inside, -d, d)


_base_sdf = scenes._sdf


def extended_sdf(shape, xx, yy, cx, cy, r):
    if shape == "star":
        return polygon_sdf(xx, yy, star_polygon(cx, cy, r))
    if shape == "diamond":
        return (np.abs(xx - cx) + np.abs(yy - cy) - r) / math.sqrt(2)
    if shape == "heart":
        return polygon_sdf(xx, yy, heart_polygon(cx, cy, r))
    if shape == "ring":
        return np.abs(np.hypot(xx - cx, yy - cy) - r * (1 + RING_INNER) / 2) - r * (1 - RING_INNER) / 2
    return _base_sdf(shape, xx, yy, cx, cy, r)


scenes._sdf = extended_sdf  # scenes.render looks the function up at call time

CONCEPT_SEED_BASE = {"star": 70_000_000, "heart": 71_000_000, "ring": 72_000_000, "diamond": 73_000_000}
HELDOUT_OFFSET = 900_000  # held-out concept prompts: seeds base + 900000 + i (never trained on)
P_SECOND_OBJECT = 0.25


def concept_attributes(concept, rng):
    """A base-grammar scene whose first object is the concept shape, always large (the VAE blurs small new
    shapes into blobs), sometimes with a second, small base-shape object where one fits."""
    attrs = scenes.sample_attributes(rng)
    objs = attrs["objects"]
    objs[0]["shape"] = concept
    objs[0]["size"] = "large"
    if len(objs) == 2:
        objs[1]["size"] = "small"
        (x1, y1), (x2, y2) = scenes.POSITIONS[objs[0]["position"]], scenes.POSITIONS[objs[1]["position"]]
        r = (scenes.SIZES["large"] + scenes.SIZES["small"]) * scenes.SIZE_JITTER[1]
        fits = math.hypot(x1 - x2, y1 - y2) >= 1.15 * r + 2 * scenes.JITTER
        if not fits or rng.random() > P_SECOND_OBJECT / scenes.P_TWO_OBJECTS:
            del objs[1]
    return attrs


def concept_scene(concept, seed):
    rng = np.random.default_rng(seed)
    attrs = concept_attributes(concept, rng)
    tex = scenes.sample_texture(rng)
    img, _ = scenes.render(attrs, rng, scenes.IMAGE_SIZE, tex)
    return img, scenes.caption_of(attrs), attrs


def concept_heldout(concept, n):
    out = []
    for i in range(n):
        seed = CONCEPT_SEED_BASE[concept] + HELDOUT_OFFSET + i
        _, cap, attrs = concept_scene(concept, seed)
        out.append({"caption": cap, "seed": seed, "attributes": attrs, "concept": concept})
    return out


if __name__ == "__main__":
    logs = os.path.join(HERE, "logs")
    os.makedirs(logs, exist_ok=True)
    imgs = [concept_scene(c, CONCEPT_SEED_BASE[c] + s)[0] for c in NEW_SHAPES for s in range(8)]
    scenes.write_png(os.path.join(logs, "concepts_preview.png"), scenes.grid(imgs, 8))
    for c in NEW_SHAPES:
        print(concept_scene(c, CONCEPT_SEED_BASE[c])[1])


def write_heldout(path, n=64):
    """Held-out concept prompts for the evaluation (seeds never used in training)."""
    items = [it for c in NEW_SHAPES for it in concept_heldout(c, n)]
    with open(path, "w") as f:
        json.dump(items, f, indent=1)
    return items

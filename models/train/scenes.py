"""Deterministic procedural scenes for the "tiny-shapes" model pack.

scene(seed) -> (image uint8 [128,128,3], caption str, attributes dict, texture dict)

Everything is a pure function of the seed (numpy PCG64 generator), so the
training set, the held-out set and the evaluation can be regenerated exactly.

Geometry (also written to models/packs/tiny-shapes/scenes.json):
  * image 128x128, x to the right, y downwards, coordinates normalised to [0,1].
  * positions (object centre): left (0.25,0.5), right (0.75,0.5), top (0.5,0.25),
    bottom (0.5,0.75), centre (0.5,0.5); jitter uniform +-0.03 on each axis.
  * sizes: half-extent r (normalised) small 0.10, large 0.18, jitter x[0.92,1.08].
    circle radius r; square half side r; triangle (pointing up) vertices
    (cx, cy-r), (cx-r, cy+r), (cx+r, cy+r).
  * backgrounds: plain colour, or gradient between two palette colours;
    direction "vertical" = from-colour at the top, to-colour at the bottom;
    "horizontal" = from-colour on the left, to-colour on the right.
Caption grammar (lower-case words only):
  caption   := object [ " and " object ] " on " background
  object    := "a " size " " color " " shape " " where
  where     := "on the left" | "on the right" | "at the top" | "at the bottom" | "in the centre"
  background:= "a " color " background"
             | "a " direction " gradient from " color " to " color " background"
"""
import json
import math

import numpy as np

IMAGE_SIZE = 128

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 60, 230),
    "yellow": (250, 230, 20),
    "purple": (140, 30, 190),
    "orange": (255, 130, 0),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLORS = list(PALETTE.keys())
SHAPES = ["circle", "square", "triangle"]
SIZES = {"small": 0.10, "large": 0.18}
POSITIONS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
DIRECTIONS = ["vertical", "horizontal"]
JITTER = 0.03
SIZE_JITTER = (0.92, 1.08)
P_GRADIENT = 0.4
P_TWO_OBJECTS = 0.35
P_TEXTURE = 0.3
TRAIN_SEED_RANGE = (0, 9_999_999)
HELDOUT_SEED_BASE = 50_000_000

GRAMMAR_WORDS = sorted(set(
    ["a", "and", "on", "the", "at", "in", "background", "gradient", "from", "to"]
    + COLORS + SHAPES + list(SIZES) + list(POSITIONS) + DIRECTIONS
))


def object_phrase(o):
    return f"a {o['size']} {o['color']} {o['shape']} {POSITION_PHRASES[o['position']]}"


def background_phrase(bg):
    if bg["kind"] == "plain":
        return f"a {bg['color']} background"
    return f"a {bg['direction']} gradient from {bg['from']} to {bg['to']} background"


def caption_of(attrs):
    objs = " and ".join(object_phrase(o) for o in attrs["objects"])
    return f"{objs} on {background_phrase(attrs['background'])}"


def sample_attributes(rng):
    if rng.random() < P_GRADIENT:
        a, b = rng.choice(len(COLORS), 2, replace=False)
        bg = {"kind": "gradient", "from": COLORS[a], "to": COLORS[b],
              "direction": DIRECTIONS[rng.integers(2)]}
        bg_colors = {bg["from"], bg["to"]}
    else:
        bg = {"kind": "plain", "color": COLORS[rng.integers(len(COLORS))]}
        bg_colors = {bg["color"]}
    allowed = [c for c in COLORS if c not in bg_colors]
    n = 2 if rng.random() < P_TWO_OBJECTS else 1
    pos_names = list(POSITIONS)
    pidx = rng.choice(len(pos_names), n, replace=False)
    objs = []
    for i in range(n):
        objs.append({
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "color": allowed[rng.integers(len(allowed))],
            "size": "large" if rng.random() < 0.5 else "small",
            "position": pos_names[pidx[i]],
        })
    if n == 2:
        # keep two objects from overlapping: downgrade sizes until they fit
        (x1, y1), (x2, y2) = POSITIONS[objs[0]["position"]], POSITIONS[objs[1]["position"]]
        d = math.hypot(x1 - x2, y1 - y2)
        def fits():
            r = sum(SIZES[o["size"]] * SIZE_JITTER[1] for o in objs)
            return d >= 1.15 * r + 2 * JITTER
        for o in objs:
            if not fits():
                o["size"] = "small"
    return {"background": bg, "objects": objs}


def _grid(size=IMAGE_SIZE):
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c)  # xx, yy


def _sdf(shape, xx, yy, cx, cy, r):
    """Signed distance (normalised units), negative inside."""
    if shape == "circle":
        return np.hypot(xx - cx, yy - cy) - r
    if shape == "square":
        dx = np.abs(xx - cx) - r
        dy = np.abs(yy - cy) - r
        outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
        inside = np.minimum(np.maximum(dx, dy), 0)
        return outside + inside
    # triangle: intersection of 3 half planes (approximate sdf = max of plane distances)
    ax, ay = cx, cy - r
    bx, by = cx - r, cy + r
    cx2, cy2 = cx + r, cy + r
    d = []
    for (px, py), (qx, qy) in (((ax, ay), (bx, by)), ((bx, by), (cx2, cy2)), ((cx2, cy2), (ax, ay))):
        ex, ey = qx - px, qy - py
        n = math.hypot(ex, ey)
        # outward normal for clockwise-in-screen order a->b->c (y down)
        nx, ny = -ey / n, ex / n
        d.append((xx - px) * nx + (yy - py) * ny)
    return np.maximum(np.maximum(d[0], d[1]), d[2])


def render(attrs, rng, size=IMAGE_SIZE, texture=None, palette=None):
    pal = palette or PALETTE
    xx, yy = _grid(size)
    bg = attrs["background"]
    if bg["kind"] == "plain":
        img = np.broadcast_to(np.array(pal[bg["color"]], np.float32), (size, size, 3)).copy()
    else:
        t = yy if bg["direction"] == "vertical" else xx
        t = ((t * size - 0.5) / (size - 1))[..., None]
        c0 = np.array(pal[bg["from"]], np.float32)
        c1 = np.array(pal[bg["to"]], np.float32)
        img = c0 * (1 - t) + c1 * t
    geo = []
    for o in attrs["objects"]:
        px, py = POSITIONS[o["position"]]
        cx = px + rng.uniform(-JITTER, JITTER)
        cy = py + rng.uniform(-JITTER, JITTER)
        r = SIZES[o["size"]] * rng.uniform(*SIZE_JITTER)
        geo.append((cx, cy, r))
        sd = _sdf(o["shape"], xx, yy, cx, cy, r) * size  # in pixels
        alpha = np.clip(0.5 - sd, 0.0, 1.0)[..., None]
        img = img * (1 - alpha) + np.array(pal[o["color"]], np.float32) * alpha
    if texture:
        img = apply_texture(img, texture, rng, size)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), geo


def apply_texture(img, tex, rng, size):
    xx, yy = _grid(size)
    if tex.get("light", 0) > 0:
        # smooth lighting variation (webcam-like vignetting / shading)
        ang = rng.uniform(0, 2 * math.pi)
        g = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
        img = img * (1 + tex["light"] * g[..., None])
    if tex.get("noise", 0) > 0:
        img = img + rng.normal(0, tex["noise"], img.shape).astype(np.float32)
    return img


def sample_texture(rng):
    if rng.random() >= P_TEXTURE:
        return None
    return {"noise": float(rng.uniform(1.0, 5.0)), "light": float(rng.uniform(0.0, 0.25))}


def scene_attributes(seed):
    """The attributes scene(seed) draws, without rendering (the same first draws of the same generator)."""
    return sample_attributes(np.random.default_rng(seed))


def scene(seed, size=IMAGE_SIZE):
    """Returns (uint8 image [H,W,3], caption, attributes, texture-or-None)."""
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(rng)
    tex = sample_texture(rng)
    img, _ = render(attrs, rng, size, tex)
    return img, caption_of(attrs), attrs, tex


# ---------------------------------------------------------------- VAE extras
def _smooth_noise(rng, size, cells, ch=3):
    g = rng.random((cells + 1, cells + 1, ch)).astype(np.float32)
    c = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.clip(np.floor(c).astype(int), 0, cells - 1)
    f = c - i0
    f = f * f * (3 - 2 * f)
    a = g[i0][:, i0] * (1 - f)[None, :, None] + g[i0][:, i0 + 1] * f[None, :, None]
    b = g[i0 + 1][:, i0] * (1 - f)[None, :, None] + g[i0 + 1][:, i0 + 1] * f[None, :, None]
    return a * (1 - f)[:, None, None] + b * f[:, None, None]


def texture_image(seed, size=IMAGE_SIZE):
    """Pure procedural textures (noise, stripes, blobs, gradients) with random colours,
    used only for VAE training so it reconstructs webcam-like frames passably."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(5)
    xx, yy = _grid(size)
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # multi-scale smooth colour noise
        img = np.zeros((size, size, 3), np.float32)
        w = 0
        for cells in (2, 4, 8, 16, 32)[: rng.integers(2, 6)]:
            a = rng.uniform(0.3, 1.0)
            img += a * _smooth_noise(rng, size, cells)
            w += a
        img = img / w
        img = (img - img.mean()) * rng.uniform(1.0, 3.0) + 0.5
        img = np.clip(img, 0, 1) * 255
    elif kind == 1:  # stripes
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(2, 16)
        s = np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)) + rng.uniform(0, 6.3))
        if rng.random() < 0.5:
            s = np.sign(s) * np.minimum(np.abs(s) * 4, 1)
        t = (s * 0.5 + 0.5)[..., None]
        img = c0 * (1 - t) + c1 * t
    elif kind == 2:  # blobs
        img = np.broadcast_to(c0, (size, size, 3)).copy()
        for _ in range(rng.integers(3, 12)):
            cx, cy = rng.random(2)
            s = rng.uniform(0.03, 0.2)
            a = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))[..., None]
            img = img * (1 - a) + rng.uniform(0, 255, 3).astype(np.float32) * a
    elif kind == 3:  # smooth gradient, random angle
        ang = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang)
        t = np.clip(t / 1.42 + 0.5, 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
    else:  # random-coloured shapes on noisy background (webcam-ish)
        img = _smooth_noise(rng, size, 4) * 255 * rng.uniform(0.3, 1.0)
        for _ in range(rng.integers(1, 5)):
            sd = _sdf(SHAPES[rng.integers(3)], xx, yy, rng.random(), rng.random(), rng.uniform(0.05, 0.3)) * size
            a = np.clip(0.5 - sd, 0, 1)[..., None]
            img = img * (1 - a) + rng.uniform(0, 255, 3).astype(np.float32) * a
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(1, 8), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def scenes_spec():
    return {
        "version": 1,
        "image_size": IMAGE_SIZE,
        "coordinates": "normalised [0,1]; x to the right, y downwards; object centre position",
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "colors": COLORS,
        "shapes": SHAPES,
        "sizes": {k: {"half_extent": v, "jitter_factor": list(SIZE_JITTER)} for k, v in SIZES.items()},
        "shape_geometry": {
            "circle": "radius = half_extent",
            "square": "axis-aligned, half side = half_extent",
            "triangle": "pointing up, vertices (cx, cy-r), (cx-r, cy+r), (cx+r, cy+r), r = half_extent",
        },
        "positions": {k: {"center": list(v), "jitter": JITTER, "phrase": POSITION_PHRASES[k]} for k, v in POSITIONS.items()},
        "backgrounds": {
            "plain": "solid palette colour",
            "gradient": "linear blend between two different palette colours; vertical = 'from' at top, 'to' at bottom; horizontal = 'from' at left, 'to' at right",
            "directions": DIRECTIONS,
            "p_gradient": P_GRADIENT,
        },
        "rules": [
            "object colours always differ from the background colour(s)",
            "two objects are always at different positions; sizes are downgraded to small when two large objects would overlap",
            f"one object with p={1 - P_TWO_OBJECTS}, two with p={P_TWO_OBJECTS}",
            f"mild texture (gaussian noise std 1-5 of 255, lighting ramp <= 25%) on p={P_TEXTURE} of scenes",
        ],
        "grammar": {
            "caption": "object [' and ' object] ' on ' background",
            "object": "'a ' size ' ' color ' ' shape ' ' where",
            "where": POSITION_PHRASES,
            "background_plain": "'a ' color ' background'",
            "background_gradient": "'a ' direction ' gradient from ' color ' to ' color ' background'",
            "examples": [
                "a large red circle in the centre on a blue background",
                "a small yellow triangle at the top on a vertical gradient from black to white background",
                "a small red circle on the left and a large blue square on the right on a green background",
            ],
        },
        "words": GRAMMAR_WORDS,
        "seeds": {"train": list(TRAIN_SEED_RANGE), "heldout_base": HELDOUT_SEED_BASE},
    }


def heldout(n=256):
    out = []
    for i in range(n):
        seed = HELDOUT_SEED_BASE + i
        _, cap, attrs, tex = scene(seed)
        out.append({"caption": cap, "seed": seed, "attributes": attrs, "texture": tex})
    return out


def write_png(path, img):
    """Minimal PNG writer (uint8 HxWx3) without PIL."""
    import struct
    import zlib
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def grid(images, cols):
    n = len(images)
    h, w, _ = images[0].shape
    rows = (n + cols - 1) // cols
    g = np.full((rows * (h + 2), cols * (w + 2), 3), 128, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        g[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = im
    return g


if __name__ == "__main__":
    import os
    import sys
    pack = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "packs", "tiny-shapes")
    os.makedirs(pack, exist_ok=True)
    with open(os.path.join(pack, "scenes.json"), "w") as f:
        json.dump(scenes_spec(), f, indent=1)
    with open(os.path.join(pack, "heldout.json"), "w") as f:
        json.dump(heldout(256), f, indent=1)
    logs = os.path.join(os.path.dirname(__file__), "logs")
    os.makedirs(logs, exist_ok=True)
    imgs = [scene(s)[0] for s in range(24)] + [texture_image(s) for s in range(8)]
    write_png(os.path.join(logs, "scenes_preview.png"), grid(imgs, 8))
    for s in range(6):
        print(s, scene(s)[1])

"""Held-out loose phrasings (issue 17): prompts as people write them, from a template set that training never uses.

python3 heldout_phrasings.py  ->  models/packs/tiny-shapes/heldout_loose.json
Written apart from captions.py on purpose: other carrier phrases ("please draw", "there is", "i'd like", "sitting
on", "showing", "beside", "two shapes:"), other orders and punctuation, words training does not use, and
attributes left open. Each item says what must be seen (`expect`: background, or null when the prompt names none;
per object its colour and shape, and size/position only where the prompt names them). The evaluator
(pipelines/evaluation/loose-score.ts) checks the background and that each object is present in its colour.
  loose:     one object (200 prompts)      loose2: two objects (100)
  unplaced:  prompts naming no position, each rendered with 6 seeds (seed diversity: distinct positions)
Two template sets: "a" (ONE, TWO; seeds 60,000,000+) was scored during development, and its failures led to one
round of additions to captions.py (colour after the word background, more separators and prepositions); "b"
(ONE_B, TWO_B; 100 + 50 prompts, seeds 61,000,000+) was written after those additions, before any training on
them, and first scored on the final model: it is the untouched figure.
"""
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402

SEED_BASE = 60_000_000
SEED_BASE_B = 61_000_000
SIZE_HELDOUT = {"large": ["large", "big"], "small": ["small", "tiny"]}
POSITION_HELDOUT = {"left": "placed on the left", "right": "over on the right", "top": "up at the top",
                    "bottom": "down at the bottom", "centre": "right in the middle"}

ONE = [
    "please draw a {o} on {bc}",
    "{o} sitting on a {bc} background",
    "i'd like a {o} with a {bc} background",
    "there is a {o} on a {bc} background",
    "{o} over {bc}",
    "simple {o}; {bc} background",
    "a {bc} background and a {o} on it",
    "generate a {o} against a {bc} background",
    "{O} ON {BC} BACKGROUND",
    "my picture: a {o}, the background is {bc}",
    "{bc} colored background with one {o}",
    "a {o} on top of a {bc} background, clean vector style",
    "Create an image of a {o} on a {bc} background.",
    "{o}. background: {bc}",
    "a {o} in front of a {bc} backdrop, 3d render",
]
ONE_GRADIENT = [
    "a {o} on a gradient going from {a} to {b}",
    "please draw a {o} over a {a} to {b} gradient",
    "{o} with a {d} gradient background from {a} to {b}",
]
TWO = [
    "two shapes: a {o1} and a {o2}, {bc} background",
    "{o1} beside a {o2} on {bc}",
    "draw a {o1} together with a {o2} on a {bc} background",
    "a {bc} background showing a {o1} and a {o2}",
    "{o1} & {o2} over a {bc} backdrop",
    "one {o1}, one {o2}, {bc} bg",
    "there are a {o1} and a {o2} on a {bc} background",
    "A {O1} AND A {O2} ON {BC}",
]
ONE_B = [
    "can you make a {o} on a {bc} background?",
    "the image shows a {o} on a {bc} background",
    "show me a {o} on a {bc} background please",
    "a {o} with {bc} all around it",
    "{o} (background {bc})",
    "paint a {o} onto a {bc} background",
    "{bc} background + {o}",
    "{O}, {BC} BACKGROUND, NOTHING ELSE",
    "a nice {o} on a {bc} background, trending",
    "a {o} floating on {bc}",
]
TWO_B = [
    "a {o1} next to a {o2}, on a {bc} background",
    "{bc} background with two objects: a {o1} and a {o2}",
    "show a {o1} and also a {o2} over a {bc} background",
    "a {o1}, then a {o2}, all on {bc}",
    "Picture of a {o1} and a {o2}. {BC} background.",
]
UNPLACED = [
    "a red circle",
    "a large green square on a white background",
    "yellow triangle, black background",
    "a blue circle on an orange background",
    "a small white square",
    "a purple triangle on a yellow background",
    "an orange circle, highly detailed",
    "a big black square on a red background",
    "a green triangle on a purple background",
    "a yellow circle",
]


def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def _object(rng, color, shape, with_size, with_position, position):
    o = {"color": color, "shape": shape, "size": None, "position": None}
    words = []
    if with_size:
        o["size"] = _pick(rng, ["large", "small"])
        words.append(_pick(rng, SIZE_HELDOUT[o["size"]]))
    words += [color, shape]
    text = " ".join(words)
    if with_position:
        o["position"] = position
        text += " " + POSITION_HELDOUT[position]
    return o, text


def _background(rng, gradient):
    if not gradient:
        return {"kind": "plain", "color": _pick(rng, scenes.COLORS)}
    a, b = rng.choice(len(scenes.COLORS), 2, replace=False)
    return {"kind": "gradient", "from": scenes.COLORS[a], "to": scenes.COLORS[b], "direction": None}


def _colors_apart(rng, bg, n):
    used = {bg["color"]} if bg["kind"] == "plain" else {bg["from"], bg["to"]}
    allowed = [c for c in scenes.COLORS if c not in used]
    return [allowed[i] for i in rng.choice(len(allowed), n, replace=False)]


def one_object(rng, i, templates=ONE):
    gradient = templates is ONE and rng.random() < 0.15
    bg = _background(rng, gradient)
    [color] = _colors_apart(rng, bg, 1)
    shape = _pick(rng, scenes.SHAPES)
    position = _pick(rng, list(scenes.POSITIONS))
    o, text = _object(rng, color, shape, rng.random() < 0.4, rng.random() < 0.3, position)
    if gradient:
        t = _pick(rng, ONE_GRADIENT)
        if "{d}" in t:
            bg["direction"] = _pick(rng, scenes.DIRECTIONS)
        caption = t.format(o=text, a=bg["from"], b=bg["to"], d=bg["direction"])
    else:
        t = templates[i % len(templates)]
        caption = t.format(o=text, bc=bg["color"], O=text.upper(), BC=bg["color"].upper())
    return caption, {"background": bg, "objects": [o]}


def two_objects(rng, i, templates=TWO):
    bg = _background(rng, False)
    c1, c2 = _colors_apart(rng, bg, 2)
    p1, p2 = [list(scenes.POSITIONS)[k] for k in rng.choice(5, 2, replace=False)]
    placed = rng.random() < 0.25
    o1, t1 = _object(rng, c1, _pick(rng, scenes.SHAPES), False, placed, p1)
    o2, t2 = _object(rng, c2, _pick(rng, scenes.SHAPES), False, placed, p2)
    t = templates[i % len(templates)]
    caption = t.format(o1=t1, o2=t2, bc=bg["color"], O1=t1.upper(), O2=t2.upper(), BC=bg["color"].upper())
    return caption, {"background": bg, "objects": [o1, o2]}


def unplaced_expect(caption):
    words = caption.replace(",", " ").split()
    color = next(w for w in words if w in scenes.COLORS)
    shape = next(w for w in words if w in scenes.SHAPES)
    bgs = [w for k, w in enumerate(words) if w in scenes.COLORS and k + 1 < len(words) and words[k + 1] == "background"]
    bg = {"kind": "plain", "color": bgs[0]} if bgs else None
    size = next((s for s in scenes.SIZES if s in words), None)
    return {"background": bg, "objects": [{"color": color, "shape": shape, "size": size, "position": None}]}


def _articles(text):
    """'a orange' -> 'an orange' (and 'A ORANGE' -> 'AN ORANGE')."""
    return re.sub(r"\b([aA]) (?=[aeiouAEIOU])", lambda m: m.group(1) + ("N " if m.group(1) == "A" else "n "), text)


def build():
    rng = np.random.default_rng(SEED_BASE)
    items = []
    for i in range(200):
        caption, expect = one_object(rng, i)
        items.append({"caption": _articles(caption), "seed": SEED_BASE + len(items), "kind": "loose", "set": "a", "expect": expect})
    for i in range(100):
        caption, expect = two_objects(rng, i)
        items.append({"caption": _articles(caption), "seed": SEED_BASE + len(items), "kind": "loose2", "set": "a", "expect": expect})
    rng_b = np.random.default_rng(SEED_BASE_B)
    for i in range(150):
        caption, expect = one_object(rng_b, i, ONE_B) if i < 100 else two_objects(rng_b, i, TWO_B)
        items.append({"caption": _articles(caption), "seed": SEED_BASE_B + i, "kind": "loose" if i < 100 else "loose2",
                      "set": "b", "expect": expect})
    unplaced = [{"caption": c, "seeds": [1, 2, 3, 4, 5, 6], "expect": unplaced_expect(c)} for c in UNPLACED]
    return {"version": 2, "template_sets": {"a": "ONE, TWO (scored during development)", "b": "ONE_B, TWO_B (first scored on the final model)"},
            "generator": "heldout_phrasings.py (training uses captions.py)", "items": items, "unplaced": unplaced}


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "packs", "tiny-shapes", "heldout_loose.json")
    data = build()
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
    for it in data["items"][:20] + data["items"][200:212]:
        print(it["caption"])
    print(len(data["items"]), "items,", len(data["unplaced"]), "unplaced prompts ->", out)

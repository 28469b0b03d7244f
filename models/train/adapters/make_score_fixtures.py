"""Ground-truth renders for the concept scorer test: test/fixtures/adapters/scenes/<shape>-<i>.png, items.json, and scenes.json (the spec).
python3 make_score_fixtures.py [--n 2] [--out DIR]"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shapes  # noqa: E402
import scenes  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=2)
ap.add_argument("--out", default=os.path.join(ROOT, "test", "fixtures", "adapters", "scenes"))
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)
items = []
for shape in scenes.SHAPES + shapes.NEW_SHAPES:
    for i in range(args.n):
        seed = 80_000_000 + 1000 * len(items) + i
        rng = np.random.default_rng(seed)
        attrs = shapes.concept_attributes(shape, rng)
        img, _ = scenes.render(attrs, rng, scenes.IMAGE_SIZE, None)
        name = f"{shape}-{i}.png"
        scenes.write_png(os.path.join(args.out, name), img)
        items.append({"file": name, "caption": scenes.caption_of(attrs), "attributes": attrs})
json.dump(items, open(os.path.join(args.out, "items.json"), "w"), indent=1)
json.dump(scenes.scenes_spec(), open(os.path.join(args.out, "scenes.json"), "w"), indent=1)  # the spec the evaluator reads
print(len(items), "scenes")

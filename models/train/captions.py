"""Training captions as people write them (issue 17): one scene, many phrasings, drawn by a seeded generator.

caption(attrs, rng) -> str    a phrasing of the scene's attributes; any subset of size, position and background
                              (and a gradient's direction) may be left out: the scene still has them, so the model
                              learns that the seed decides what the prompt leaves open.
The exact grammar of scenes.caption_of stays one form among many (P_EXACT). Synonyms are only those whose meaning
is unambiguous for this world; filler and style words carry no scene meaning; random unknown words are inserted so
the text encoder learns to give them little weight. The held-out loose set (heldout_phrasings.py) is written with
a different template set.
VOCABULARY lists the words the tokenizer makes single tokens (clip_tokenizer.build appends them to the old vocabulary).
"""
import numpy as np

import scenes

SIZE_WORDS = {"large": ["large", "big", "huge"], "small": ["small", "tiny", "little"]}
SHAPE_WORDS = {"circle": ["circle", "disc", "disk"], "square": ["square"], "triangle": ["triangle"]}
# phrases after the object ("a red circle on the left") and bare forms for lists ("red circle, left")
POSITION_AFTER = {
    "left": ["on the left", "on the left side", "at the left", "to the left", "on the left of the image", "on the left-hand side"],
    "right": ["on the right", "on the right side", "at the right", "to the right", "on the right of the image", "on the right-hand side"],
    "top": ["at the top", "on top", "near the top", "at the top of the image", "in the upper half", "in the upper part", "up top"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom of the image", "in the lower half", "in the lower part", "down at the bottom"],
    "centre": ["in the centre", "in the center", "in the middle", "at the centre", "at the center", "centered", "centred",
               "in the middle of the image", "in the center of the picture"],
}
POSITION_BARE = {"left": ["left", "left side"], "right": ["right", "right side"], "top": ["top", "upper"],
                 "bottom": ["bottom", "lower"], "centre": ["centre", "center", "middle", "centered"]}
DIRECTION_WORDS = {"vertical": ["vertical", "top-to-bottom"], "horizontal": ["horizontal", "left-to-right"]}
PREFIXES = ["a picture of ", "an image of ", "a photo of ", "photo of ", "a drawing of ", "an illustration of ",
            "a painting of ", "a render of ", "a rendering of ", "a simple drawing of ", "digital art of ", "minimal ",
            "a minimalist picture of ", "an icon of ", "a logo of ", "a flat illustration of ", "a sketch of "]
ADJECTIVES = ["beautiful", "nice", "simple", "flat", "plain", "solid", "cute", "perfect", "shiny", "clean", "lovely",
              "geometric", "single", "lone", "pretty", "smooth", "sharp", "bold"]
COLOR_MODIFIERS = ["bright", "dark", "light", "deep", "pure", "vivid", "pale"]
SUFFIXES = [", highly detailed", ", minimal", ", minimalist", ", illustration", ", digital art", ", 4k", ", hd",
            ", high quality", ", simple", ", flat design", ", vector art", ", trending on artstation", ", masterpiece",
            ", clean", ", geometric", ", abstract", " in a minimal style", ", sharp focus", ", best quality", ", 8k",
            ", flat colors", ", flat colours", ", simple shapes", ", centered composition", ", plain", ", art",
            ", detailed", ", very detailed", ", minimalistic", ", style of a logo", ", graphic design", ", cartoon"]
OBJECT_JOINS = [" and ", ", ", " and also ", " plus ", " & "]
# real English words outside this world, for unknown-word insertion (more come from random letter strings)
UNKNOWN_WORDS = ["cat", "house", "happy", "sunset", "tree", "music", "window", "friend", "ocean", "river", "car",
                 "dream", "summer", "winter", "mountain", "lamp", "old", "new", "funny", "quick", "story", "garden",
                 "paper", "glass", "metal", "wooden", "soft", "hard", "magic", "space", "city", "forest", "robot"]

P_EXACT = 0.22          # the old grammar, every attribute named
P_DROP_SIZE = 0.45      # per object
P_DROP_POSITION = 0.45  # all objects' positions at once (else each kept)
P_DROP_BACKGROUND = 0.3
P_DROP_DIRECTION = 0.35  # a gradient named without its direction
P_PREFIX = 0.25
P_ADJECTIVE = 0.12
P_COLOR_MODIFIER = 0.06
P_SUFFIX = 0.3
P_UNKNOWN = 0.2
P_CASE = 0.2
P_PUNCT = 0.25

FUNCTION_WORDS = ["a", "an", "the", "of", "with", "on", "in", "at", "to", "from", "and", "is", "it", "one", "two",
                  "near", "side", "half", "part", "against", "over", "behind", "front", "up", "down", "hand",
                  "some", "there", "this", "that", "its", "also", "plus", "please", "draw", "show", "me", "make",
                  "create", "generate", "want", "like", "would", "can", "you", "my", "some", "just", "here", "placed",
                  "sitting", "filled", "colored", "coloured", "both", "each", "other", "then", "for", "by", "as", "are",
                  "scene", "art", "style", "design", "quality", "focus", "composition", "colors", "colours", "very",
                  "best", "high", "trending", "artstation", "masterpiece", "detailed", "highly", "minimal", "minimalist",
                  "minimalistic", "illustration", "digital", "vector", "drawing", "painting", "render", "rendering",
                  "sketch", "icon", "logo", "graphic", "cartoon", "abstract", "hd", "fading", "fade", "fades",
                  "backdrop", "canvas", "bg", "centered", "centred", "center", "middle", "upper", "lower", "top", "bottom"]
OTHER_COLORS = ["gray", "grey", "pink", "brown", "cyan", "violet", "magenta", "gold", "silver"]  # not in the palette
VOCABULARY = sorted(set(
    scenes.GRAMMAR_WORDS + FUNCTION_WORDS + ADJECTIVES + COLOR_MODIFIERS
    + [w for ws in SIZE_WORDS.values() for w in ws] + [w for ws in SHAPE_WORDS.values() for w in ws]
    + OTHER_COLORS + ["colour", "color", "picture", "image", "photo", "shape", "shapes", "object", "objects", "circles", "squares", "triangles",
       "vertical", "horizontal", "gradient", "background", "left", "right"]
))


# vocabulary words with no scene meaning in any position: inserted at random like unknown words, so each is trained
NEUTRAL_WORDS = sorted(set(FUNCTION_WORDS + ADJECTIVES + OTHER_COLORS) - set(scenes.GRAMMAR_WORDS) - {
    "side", "half", "part", "up", "down", "hand", "front", "behind", "over", "against", "near", "centered", "centred",
    "center", "middle", "upper", "lower", "top", "bottom", "fading", "fade", "fades", "backdrop", "canvas", "bg", "two",
    "one", "single", "lone", "both", "each", "other"})


def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def _article(rng, next_word):
    r = rng.random()
    if r < 0.7:
        return "an " if next_word[0] in "aeiou" else "a "
    if r < 0.78:
        return "one "
    if r < 0.86:
        return "the "
    if r < 0.9:
        return "a single " if next_word[0] not in "aeiou" else "one "
    return ""


def _color_phrase(rng, color):
    if rng.random() < P_COLOR_MODIFIER:
        return f"{_pick(rng, COLOR_MODIFIERS)} {color}"
    return color


def object_phrase(rng, o, size, position, order):
    """One object; `size` / `position` False leaves them out; `order` picks the word order."""
    shape = _pick(rng, SHAPE_WORDS[o["shape"]])
    color = _color_phrase(rng, o["color"])
    words = []
    if rng.random() < P_ADJECTIVE:
        words.append(_pick(rng, ADJECTIVES))
    if order == "colour-size" and size:
        words += [color, _pick(rng, SIZE_WORDS[o["size"]]), shape]
    elif order == "coloured":
        words += ([_pick(rng, SIZE_WORDS[o["size"]])] if size else []) + [f"{color}{_pick(rng, [' coloured', ' colored', '-colored', '-coloured'])}", shape]
    else:
        words += ([_pick(rng, SIZE_WORDS[o["size"]])] if size else []) + [color, shape]
    if order == "shape-in-colour":  # "a large circle in red"
        words = ([_pick(rng, SIZE_WORDS[o["size"]])] if size else []) + [shape, "in", color]
    if order == "shape-that-is":  # "a large circle that is red", "a circle coloured red"
        words = ([_pick(rng, SIZE_WORDS[o["size"]])] if size else []) + [shape, _pick(rng, ["that is", "which is", "coloured", "colored"]), color]
    text = " ".join(words)
    text = _article(rng, text) + text
    if position:
        text += " " + _pick(rng, POSITION_AFTER[o["position"]])
    return text


def background_noun(rng, bg, direction):
    """'a blue background', 'a gradient from red to yellow', ... (with an article)."""
    if bg["kind"] == "plain":
        c = _color_phrase(rng, bg["color"])
        a = "an" if c[0] in "aeiou" else "a"
        return _pick(rng, [f"{a} {c} background", f"a plain {c} background", f"a solid {c} background", f"{a} {c} backdrop",
                           f"{a} {c} canvas", f"an all {c} background", f"{a} {c} bg"] if rng.random() < 0.4 else [f"{a} {c} background"])
    a, b = bg["from"], bg["to"]
    if not direction:
        return _pick(rng, [f"a gradient from {a} to {b} background", f"a gradient background from {a} to {b}",
                           f"{'an' if a[0] in 'aeiou' else 'a'} {a} to {b} gradient", f"a background fading from {a} to {b}",
                           f"{'an' if a[0] in 'aeiou' else 'a'} {a}-to-{b} gradient background"])
    d = _pick(rng, DIRECTION_WORDS[bg["direction"]])
    where = ("at the top", "at the bottom") if bg["direction"] == "vertical" else ("on the left", "on the right")
    return _pick(rng, [f"a {d} gradient from {a} to {b} background", f"a {d} gradient from {a} to {b}",
                       f"a {d} {a} to {b} gradient background", f"a gradient from {a} {where[0]} to {b} {where[1]}"])


def background_after(rng, bg, direction):
    """The word background first, its colour after: 'background: blue', 'the background is blue'."""
    if bg["kind"] == "plain":
        c = _color_phrase(rng, bg["color"])
        return _pick(rng, [f"background {c}", f"background: {c}", f"the background is {c}", f"with the background {c}",
                           f"with a background of {c}", f"background color {c}", f"background colour: {c}"])
    return _pick(rng, ["background: ", "the background is ", "background "]) + background_noun(rng, bg, direction)


def background_bare(rng, bg, direction):
    """'blue background', 'vertical red to yellow gradient' (for comma lists)."""
    noun = background_noun(rng, bg, direction)
    return noun.split(" ", 1)[1] if noun.startswith(("a ", "an ")) else noun


def _unknown_word(rng):
    """A word to be ignored: English outside this world, a neutral vocabulary word, or random letters."""
    r = rng.random()
    if r < 0.35:
        return _pick(rng, UNKNOWN_WORDS)
    if r < 0.55:
        return _pick(rng, NEUTRAL_WORDS)
    n = int(rng.integers(3, 9))
    return "".join(chr(ord("a") + int(c)) for c in rng.integers(0, 26, n))


def caption(attrs, rng):
    """A random phrasing of the scene's attributes (numpy Generator `rng`)."""
    if rng.random() < P_EXACT:
        return scenes.caption_of(attrs)
    objs = list(attrs["objects"])
    if len(objs) == 2 and rng.random() < 0.5:
        objs = objs[::-1]
    drop_all_positions = rng.random() < P_DROP_POSITION
    keep_bg = rng.random() >= P_DROP_BACKGROUND
    direction = attrs["background"]["kind"] == "gradient" and rng.random() >= P_DROP_DIRECTION
    order = _pick(rng, ["size-colour"] * 12 + ["colour-size", "coloured", "shape-in-colour", "shape-that-is"])
    parts = [object_phrase(rng, o, rng.random() >= P_DROP_SIZE, not drop_all_positions, order) for o in objs]
    join = _pick(rng, OBJECT_JOINS)
    obj_text = join.join(parts)
    bg = attrs["background"]
    form = int(rng.integers(6)) if keep_bg else 6
    sep = _pick(rng, [", ", ", ", ". ", "; ", " - ", ": "])
    if form == 0:    # a red circle on a blue background
        text = f"{obj_text} {_pick(rng, ['on', 'on', 'with', 'against', 'over', 'in front of', 'in'])} {background_noun(rng, bg, direction)}"
    elif form == 1:  # a blue background with a red circle
        text = f"{background_noun(rng, bg, direction)} with {obj_text}" + (" on it" if rng.random() < 0.2 else "")
    elif form == 2:  # red circle, blue background
        text = f"{obj_text}{sep}{background_bare(rng, bg, direction)}"
    elif form == 3:  # on a blue background, a red circle
        text = f"on {background_noun(rng, bg, direction)}, {obj_text}"
    elif form == 4:  # a red circle on blue
        c = bg["color"] if bg["kind"] == "plain" else None
        prep = _pick(rng, ["on", "on", "over", "against", "with", "in front of"])
        text = f"{obj_text} {prep} {c}" if c else f"{obj_text} {prep} {background_noun(rng, bg, direction)}"
    elif form == 5:  # a red circle. background: blue
        text = f"{obj_text}{sep}{background_after(rng, bg, direction)}"
    else:            # no background named
        text = obj_text
    if rng.random() < P_PREFIX and form != 3:
        text = _pick(rng, PREFIXES) + text
    if rng.random() < P_SUFFIX:
        text += _pick(rng, SUFFIXES)
    if rng.random() < P_UNKNOWN:
        words = text.split(" ")
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), _unknown_word(rng))
        text = " ".join(words)
    if rng.random() < P_PUNCT:
        text += _pick(rng, [".", "!", " .", "..."])
    if rng.random() < P_CASE:
        text = _pick(rng, [text.capitalize(), text.title(), text.upper()])
    return text


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    for s in range(40):
        print(caption(scenes.scene_attributes(s), rng))
    print(len(VOCABULARY), "vocabulary words")

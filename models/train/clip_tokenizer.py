"""CLIP-format byte-level BPE tokenizer (same algorithm as openai/CLIP simple_tokenizer).

* text -> html-unescape, whitespace clean (runs of whitespace -> one space, strip), lower-case
* split with CLIP's regex (re-expressed with Python `re` classes; identical for ASCII)
* each piece -> utf-8 bytes -> bytes_to_unicode symbols, last symbol gets "</w>"
* merges applied greedily by rank (lowest rank first) until none applies
* ids: [BOS] + tokens (truncated to 75) + [EOS], padded to 77 with the pad id (= EOS id here)

`build` creates vocab.json / merges.txt from the scene grammar words so that every
grammar word is a single token; `extend` appends merges and tokens for more words (issue 17: what users type)
keeping every old id, then moves <|startoftext|> / <|endoftext|> to the two last ids (the text encoder pools at
argmax(input_ids), so EOS must stay the largest id; the loaders read both ids from the files).
"""
import html
import json
import os
import re

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LEN = 77

# CLIP: <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
PAT = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
    re.IGNORECASE,
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clean(text):
    text = html.unescape(html.unescape(text)).strip()
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower()


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class ClipTokenizer:
    def __init__(self, tok_dir, data=None):
        """From a tokenizer folder, or from data=(encoder dict, merges list) in memory."""
        if data is None:
            with open(os.path.join(tok_dir, "vocab.json"), encoding="utf-8") as f:
                self.encoder = json.load(f)
            with open(os.path.join(tok_dir, "merges.txt"), encoding="utf-8") as f:
                lines = f.read().split("\n")
            merges = [tuple(l.split()) for l in lines[1:] if l.strip()]
        else:
            self.encoder, merges = data
        self.merges = merges
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {BOS: BOS, EOS: EOS}
        cfg_path = os.path.join(tok_dir, "tokenizer_config.json") if tok_dir else ""
        pad = EOS
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                pad = json.load(f).get("pad_token", EOS)
            if isinstance(pad, dict):
                pad = pad["content"]
        self.bos_id = self.encoder.get(BOS)  # None only for a vocabulary being built (extend)
        self.eos_id = self.encoder.get(EOS)
        self.pad_id = self.encoder.get(pad)

    def state(self):
        """The vocabulary and merges (stored in checkpoints, so a warm start can map rows by token string)."""
        return {"vocab": self.encoder, "merges": [list(m) for m in self.merges]}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text):
        ids = []
        for tok in PAT.findall(clean(text)):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(tok).split(" "))
        return ids

    def __call__(self, text, max_length=MAX_LEN):
        ids = self.encode(text)[: max_length - 2]
        ids = [self.bos_id] + ids + [self.eos_id]
        return ids + [self.pad_id] * (max_length - len(ids))


def learn_merges(words):
    """Plain BPE training on the given words (each weight 1, ties broken by first
    occurrence order, deterministic) until every word is a single symbol."""
    be = bytes_to_unicode()
    corpus = []
    for w in words:
        syms = [be[b] for b in w.encode("utf-8")]
        syms[-1] = syms[-1] + "</w>"
        corpus.append(syms)
    merges = []
    while True:
        counts = {}
        for syms in corpus:
            for p in zip(syms, syms[1:]):
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], -list(counts).index(kv[0])))[0]
        merges.append(best)
        a, b = best
        for k, syms in enumerate(corpus):
            out = []
            i = 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            corpus[k] = out
    return merges


TEST_CAPTIONS = [
    "",
    "a large red circle in the centre on a blue background",
    "a small yellow triangle at the top on a vertical gradient from black to white background",
    "a small red circle on the left and a large blue square on the right on a green background",
    "A Large RED Circle   in the Centre",
    "a purple square, at the bottom!",
    "an orange zebra on a white background",
    "zebra",
    "How are you doing?",
    "a   green\ttriangle\non the right",
    "background gradient horizontal vertical",
    "it's a red circle; isn't it?",
    "red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red red",
    "a black square &amp; a white circle",
    "3 circles and 12 squares",
    "café crème",
    "a circle_of_doom",
    "<|startoftext|> a blue circle <|endoftext|>",
    "ORANGE TRIANGLE AT THE BOTTOM ON A PURPLE BACKGROUND",
    "a large white circle at the top and a small black triangle at the bottom on a horizontal gradient from red to yellow background",
    "A big red circle in the center, highly detailed",
    "a blue background with a tiny yellow triangle",
    "Red circle, blue background.",
    "a beautiful huge purple disc in the middle, minimal illustration",
]


def build(tok_dir, words):
    extra = ["an", "of", "with", "is", "it", "image", "picture", "photo", "shape", "shapes", "object", "objects",
             "circles", "squares", "triangles", "one", "two", "colour", "color", "gray", "grey", "pink", "brown", "cyan"]
    words = list(dict.fromkeys(list(words) + extra))
    merges = learn_merges(words)
    be = bytes_to_unicode()
    vocab = list(be.values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for a, b in merges:
        vocab.append(a + b)
    vocab.extend([BOS, EOS])
    encoder = {}
    for v in vocab:
        if v in encoder:
            raise RuntimeError("duplicate vocab entry " + v)
        encoder[v] = len(encoder)
    return write(tok_dir, encoder, merges, words)


def extend(tok_dir, old_dir, words):
    """Appends merges (learnt on top of the old ones, by the real BPE after each addition) until every word is one
    token; old ids stay, new tokens follow them, BOS and EOS move to the end. Returns (tokenizer, {old id: new id})."""
    old = ClipTokenizer(old_dir)
    encoder = {k: v for k, v in old.encoder.items() if k not in (BOS, EOS)}
    merges = list(old.merges)
    be = bytes_to_unicode()
    pieces = ["".join(be[b] for b in w.encode("utf-8")) for w in words]
    while True:
        tok = ClipTokenizer(None, (encoder, merges))
        split = [tok.bpe(p).split(" ") for p in pieces]
        counts = {}
        for syms in split:
            for pair in zip(syms, syms[1:]):
                counts[pair] = counts.get(pair, 0) + 1  # insertion order = first occurrence (ties)
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: kv[1])[0]
        merges.append(best)
        if best[0] + best[1] not in encoder:
            encoder[best[0] + best[1]] = len(encoder)
    remap = {old.bos_id: len(encoder), old.eos_id: len(encoder) + 1}
    encoder[BOS] = len(encoder)
    encoder[EOS] = len(encoder)
    return write(tok_dir, encoder, merges, words), remap


def write(tok_dir, encoder, merges, words):
    """Writes the tokenizer files and test vectors; checks that every word is a single token."""
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {
        "bos_token": {"content": BOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "pad_token": EOS,
        "unk_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
    }
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LEN,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        "bos_token": special["bos_token"],
        "eos_token": special["eos_token"],
        "pad_token": EOS,
        "unk_token": special["unk_token"],
    }
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(tok_dir, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=1)
    tok = ClipTokenizer(tok_dir)
    for w in words:
        ids = tok.encode(w)
        assert len(ids) == 1, (w, ids)
    vectors = [{"text": t, "input_ids": tok(t), "tokens": tok.encode(t)} for t in TEST_CAPTIONS]
    with open(os.path.join(tok_dir, "test_vectors.json"), "w", encoding="utf-8") as f:
        json.dump({"max_length": MAX_LEN, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                   "vocab_size": len(encoder), "vectors": vectors}, f, ensure_ascii=False)
    return tok


if __name__ == "__main__":
    import sys
    import tempfile
    sys.path.insert(0, os.path.dirname(__file__))
    import captions
    import scenes
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "packs", "tiny-shapes", "tokenizer")
    with tempfile.TemporaryDirectory() as base:  # the first vocabulary (grammar words), then the users' words
        build(base, scenes.GRAMMAR_WORDS)
        tok, _ = extend(d, base, captions.VOCABULARY)
    print("vocab", len(tok.encoder), "bos", tok.bos_id, "eos", tok.eos_id)
    for t in TEST_CAPTIONS[:10]:
        print(repr(t[:60]), tok.encode(t)[:20])

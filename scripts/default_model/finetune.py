"""Fine-tuning the teacher end to end: dequantised e5-small, mean-pooled last layer, linear head.

The bottom layers (and the 250k-piece embeddings) stay frozen at their dequantised values, the
top `n_top` layers and the head are trained on gold labels. Because the frozen part sees no
dropout, its output for a training text never changes: it is computed once (`FrozenCache`) and
each training step runs only the top layers, so an epoch costs about n_top/12 of a full
fine-tune.
"""
from __future__ import annotations

import copy
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask

from default_model.teacher import batches_by_length


class TunedTeacher(torch.nn.Module):
    """e5 encoder + mean pooling + a 2-way linear head; `n_top` layers trainable."""

    def __init__(self, encoder, n_top: int):
        super().__init__()
        self.encoder = encoder
        self.n_frozen = encoder.config.num_hidden_layers - n_top
        self.head = torch.nn.Linear(encoder.config.hidden_size, 2)
        torch.nn.init.zeros_(self.head.weight); torch.nn.init.zeros_(self.head.bias)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.encoder.layer[self.n_frozen:]:
            for p in layer.parameters():
                p.requires_grad_(True)

    def _mask(self, h, mask):
        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=h, attention_mask=mask)

    @torch.no_grad()
    def bottom(self, ids, mask):
        """Hidden states after the frozen layers."""
        h = self.encoder.embeddings(input_ids=ids)
        m4 = self._mask(h, mask)
        for layer in self.encoder.encoder.layer[:self.n_frozen]:
            h = layer(h, m4)
        return h

    def top(self, h, mask):
        """(mean-pooled last layer, logits) from the frozen layers' output."""
        m4 = self._mask(h, mask)
        for layer in self.encoder.encoder.layer[self.n_frozen:]:
            h = layer(h, m4)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1)
        return pooled, self.head(pooled)

    def forward(self, ids, mask):
        return self.top(self.bottom(ids, mask), mask)


def pad(seqs, pad_id):
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s); mask[r, :len(s)] = 1
    return ids, mask


def length_batches(lengths, token_budget, max_batch, rng=None):
    """The teacher's batches of similar length under token_budget padded tokens, shuffled if rng."""
    out = batches_by_length(np.asarray(lengths), token_budget, max_batch)
    if rng is not None:
        rng.shuffle(out)
    return out


class FrozenCache:
    """The frozen layers' output for every training text (float16, one array per text)."""

    def __init__(self, model: TunedTeacher, ids_list, pad_id, token_budget=8192, log=print):
        t0 = time.time()
        self.states = [None] * len(ids_list)
        lengths = np.array([len(x) for x in ids_list])
        for b in length_batches(lengths, token_budget, 256):
            ids, mask = pad([ids_list[i] for i in b], pad_id)
            h = model.bottom(ids, mask).to(torch.float16)
            for r, i in enumerate(b):
                self.states[i] = h[r, :lengths[i]].clone()
        log(f"  frozen layers' output cached for {len(ids_list)} texts ({int(lengths.sum())} tokens) "
            f"in {time.time() - t0:.0f}s")

    def batch(self, idx):
        L = max(self.states[i].shape[0] for i in idx)
        d = self.states[idx[0]].shape[1]
        h = torch.zeros((len(idx), L, d), dtype=torch.float32)
        mask = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            n = self.states[i].shape[0]
            h[r, :n] = self.states[i].float(); mask[r, :n] = 1
        return h, mask


@torch.no_grad()
def cached_outputs(model: TunedTeacher, cache: FrozenCache, rows=None, token_budget=8192):
    """(mean-pooled last layer, logits) of the first `rows` cached texts (default all), running
    only the top layers on the frozen layers' cached output."""
    model.eval()
    lengths = np.array([s.shape[0] for s in cache.states[:rows]])
    d = model.encoder.config.hidden_size
    pooled, logits = np.zeros((len(lengths), d), np.float32), np.zeros((len(lengths), 2), np.float32)
    for b in length_batches(lengths, token_budget, 256):
        p, z = model.top(*cache.batch(b))
        pooled[b], logits[b] = p.numpy(), z.numpy()
    return pooled, logits


@torch.no_grad()
def teacher_outputs(model: TunedTeacher, ids_list, pad_id, token_budget=8192, progress=None):
    """(mean-pooled last layer [n, d], logits [n, 2]) of the full forward, float32."""
    model.eval()
    lengths = np.array([len(x) for x in ids_list])
    d = model.encoder.config.hidden_size
    pooled, logits = np.zeros((len(ids_list), d), np.float32), np.zeros((len(ids_list), 2), np.float32)
    for b in length_batches(lengths, token_budget, 256):
        ids, mask = pad([ids_list[i] for i in b], pad_id)
        p, z = model(ids, mask)
        pooled[b], logits[b] = p.numpy(), z.numpy()
        if progress:
            progress(len(b))
    return pooled, logits


def finetune(model: TunedTeacher, cache: FrozenCache, labels, weights, evalsets, pad_id, *, epochs=2,
             lr=5e-5, head_lr=2e-3, token_budget=4096, max_batch=64, seed=0, eval_every=200,
             time_limit_s=None, max_steps=None, log=print):
    """Train the top layers and the head with weighted cross entropy on gold labels, from the
    frozen layers' cached output of the training texts.
    evalsets: {name: (teacher ids, labels)}; the weights with the best ood_dev accuracy (ties:
    held-out, then the later step) are loaded back into model. Training stops after max_steps
    (the schedule still spans every epoch) or time_limit_s, whichever comes first, with a last
    evaluation there. Returns the evaluation history."""
    torch.manual_seed(seed)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    lengths = np.array([s.shape[0] for s in cache.states])
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]
    decay = [p for p in body if p.dim() > 1]
    no_decay = [p for p in body if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0},
                             {"params": model.head.parameters(), "weight_decay": 0.0, "lr": head_lr}], lr=lr)
    plan = [length_batches(lengths, token_budget, max_batch, random.Random(seed + e)) for e in range(epochs)]
    n_steps = sum(len(p) for p in plan)
    warm = max(1, n_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (n_steps - s) / max(1, n_steps - warm)))
    hist, best, best_key, step, t0 = [], None, None, 0, time.time()

    def evaluate():
        res = {name: float((teacher_outputs(model, ids, pad_id)[1].argmax(1) == np.asarray(yy)).mean())
               for name, (ids, yy) in evalsets.items()}
        model.train()
        return res

    def consider():
        nonlocal best, best_key
        res = dict(evaluate(), step=step)
        hist.append(res)
        log(f"  teacher eval step {step}: {res}")
        key = (res.get("ood_dev", 0), res.get("heldout", 0))
        if best_key is None or key >= best_key:
            best_key, best = key, copy.deepcopy({k: v for k, v in model.state_dict().items()
                                                 if not k.startswith("encoder.embeddings")})

    model.train()
    done = False
    for batches in plan:
        for b in batches:
            h, mask = cache.batch(b)
            _, logits = model.top(h, mask)
            loss = (F.cross_entropy(logits, y[b], reduction="none") * w[b]).sum() / w[b].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body + list(model.head.parameters()), 1.0)
            opt.step(); sched.step(); step += 1
            if step % 50 == 0:
                log(f"  teacher step {step}/{n_steps} loss {loss.item():.3f} {time.time() - t0:.0f}s")
            over = (time_limit_s is not None and time.time() - t0 > time_limit_s) or step == max_steps
            if step % eval_every == 0 or step == n_steps or over:
                consider()
            if over:
                log(f"  teacher stopped at step {step}"); done = True; break
        if done:
            break
    model.load_state_dict(best, strict=False)
    model.eval()
    return hist

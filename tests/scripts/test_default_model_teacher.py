"""The teacher's fine-tuning and the student's calibration (scripts/default_model/finetune.py,
calibration.py), on a tiny random BERT."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from default_model import calibration as C  # noqa: E402
from default_model import finetune as F  # noqa: E402

transformers = pytest.importorskip("transformers")


@pytest.fixture()
def encoder():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, pad_token_id=1)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def random_ids(n, seed=0):
    rng = np.random.default_rng(seed)
    return [[0] + rng.integers(3, 50, int(rng.integers(2, 20))).tolist() + [2] for _ in range(n)]


def test_split_forward_equals_the_whole_encoder_mean_pooled(encoder):
    model = F.TunedTeacher(encoder, n_top=1)
    ids, mask = F.pad(random_ids(7), pad_id=1)
    pooled, _ = model(ids, mask)
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    reference = (hidden * m).sum(1) / m.sum(1)
    assert torch.allclose(pooled, reference, atol=1e-5)


def test_only_the_top_layers_and_the_head_train(encoder):
    model = F.TunedTeacher(encoder, n_top=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("encoder.encoder.layer.2.", "head.")) for n in trainable)


def test_finetune_learns_a_separable_task_and_keeps_the_frozen_part(encoder):
    ids = random_ids(120, seed=1)
    labels = [int(7 in x) for x in ids]  # label: does token 7 occur
    frozen_before = {k: v.clone() for k, v in encoder.state_dict().items() if "layer.2." not in k}
    model = F.TunedTeacher(encoder, n_top=1)
    cache = F.FrozenCache(model, ids, pad_id=1, log=lambda *a: None)
    evalset = {"ood_dev": (ids, labels)}
    hist = F.finetune(model, cache, labels, [1.0] * len(ids), evalset, pad_id=1, epochs=30, lr=3e-3,
                      head_lr=3e-2, token_budget=512, eval_every=100, seed=0, log=lambda *a: None)
    _, logits = F.teacher_outputs(model, ids, pad_id=1)
    accuracy = float((logits.argmax(1) == np.array(labels)).mean())
    assert accuracy >= 0.9 and max(h["ood_dev"] for h in hist) == pytest.approx(accuracy)
    for k, v in encoder.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), k


def test_folded_calibration_is_exact():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 2)
    x = torch.randn(16, 8)
    before = head(x).detach()
    C.fold_into_classifier(head, temperature=1.7, bias=0.4)
    after = head(x).detach()
    assert torch.allclose(after, (before + torch.tensor([0.0, 0.4])) / 1.7, atol=1e-6)


def test_temperature_and_bias_are_recovered_and_lower_the_calibration_error():
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 4, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-(margin + 0.8) / 2.0))).astype(int)
    logits = np.stack([np.zeros_like(margin), margin], 1)
    t, b = C.fit_temperature_bias(logits, labels)
    assert t == pytest.approx(2.0, rel=0.1) and b == pytest.approx(0.8, abs=0.15)
    fixed = np.stack([np.zeros_like(margin), (margin + b) / t], 1)
    assert C.expected_calibration_error(fixed, labels) < 0.02 < C.expected_calibration_error(logits, labels)


def test_outputs_from_the_cache_equal_the_full_forward(encoder):
    model = F.TunedTeacher(encoder, n_top=1)
    ids = random_ids(9, seed=2)
    cache = F.FrozenCache(model, ids, pad_id=1, log=lambda *a: None)
    pooled, logits = F.cached_outputs(model, cache)
    full_pooled, full_logits = F.teacher_outputs(model, ids, pad_id=1)
    assert np.allclose(pooled, full_pooled, atol=1e-2)  # the cache holds float16
    first, _ = F.cached_outputs(model, cache, rows=4)
    assert first.shape == (4, 32) and np.allclose(first, pooled[:4], atol=1e-6)

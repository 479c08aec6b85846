"""Calibration of the student's probabilities: a temperature and a bias on the logit margin,
fitted on a development set and folded into the classifier's weights (so every backend, the
int8 ones included, serves the calibrated model with no extra step)."""
from __future__ import annotations

import numpy as np
import torch


def probabilities(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def expected_calibration_error(logits, labels, bins=10):
    """ECE over `bins` equal-width bins of the top-label confidence: the mean over texts of
    |accuracy - confidence| within each text's bin."""
    p = probabilities(logits)
    conf, pred = p.max(1), p.argmax(1)
    right = (pred == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(right[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def fit_temperature_bias(logits, labels):
    """(T, b) minimising the log loss of sigmoid((margin + b) / T), margin = logit1 - logit0."""
    z = torch.as_tensor(np.asarray(logits)[:, 1] - np.asarray(logits)[:, 0], dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    log_inv_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_inv_t, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits((z + b) * log_inv_t.exp(), y)
        loss.backward()
        return loss
    opt.step(closure)
    t, bias = float(1.0 / log_inv_t.detach().exp()), float(b.detach())
    if not (np.isfinite(t) and np.isfinite(bias) and t > 0):
        raise ValueError(f"calibration failed: temperature {t}, bias {bias}")
    return t, bias


@torch.no_grad()
def fold_into_classifier(classifier: torch.nn.Linear, temperature: float, bias: float):
    """Rewrite the 2-way head so that its logits are (logits + [0, bias]) / temperature."""
    classifier.bias[1] += bias
    classifier.weight.div_(temperature)
    classifier.bias.div_(temperature)

"""The CPU int8 recipe that the torch backend and the int8 ONNX export share: which projections
int8 computes, and the activation smoothing applied to them first.

Dynamic int8 quantizes a projection's input with one scale per batch. In a trained BERT a few
input channels carry values far above the others' (the bundled model: feed-forward inputs reach
19-24 where the median channel's largest value is 1-2.3), so that one scale leaves every other
channel a few levels. Smoothing (the SmoothQuant idea) divides input channel j by s_j and
multiplies column j of the weight by s_j: the same product in exact arithmetic, with part of the
activation's spread moved into the weights, which are quantized per output channel and absorb it:

    s_j = max|x_j| ** alpha / max_i |W_ij| ** (1 - alpha)

max|x_j| is measured once, on the packaged sample reviews run through the fp32 model (when int8
is loaded or exported). Every projection int8 computes is smoothed: Q/K/V (every layer; the last
layer's keys and values run over every token), the attention output and the feed-forward input.
The attention output's division is folded into the value projection (its input is a weighted sum
of values, channel by channel), so it costs nothing at run time; the others cost one
multiplication of the input. (An export's default accuracy report runs on the same packaged
reviews: for int8 they are not held out; ``structsent export --validate`` takes other texts.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import torch

from .batching import pad_batch
from .modeling import BertClassifier, EncoderLayer

# The projections int8 computes, by layer: all of them where they run over every token; of the
# last layer (past attention at [CLS] only), the Q/K/V projection alone.
INT8_PROJECTIONS = ("qkv", "attn_out", "ffn_in")
INT8_LAST_LAYER_PROJECTIONS = ("qkv",)
# How much of the activations' spread moves into the weights: 0.75-0.95 measured alike on the
# bundled model (0.5, SmoothQuant's default for larger models, less so).
SMOOTHING_ALPHA = 0.8
CALIBRATION_TEXTS = Path(__file__).parent / "data" / "sample_reviews.txt"
CALIBRATION_BATCH_TEXTS = 16
# A channel quiet in calibration must not get a tiny scale that a louder input would then blow up.
QUIET_CHANNEL_FLOOR = 0.1  # of the median channel's largest value

Projection = tuple[int, str]  # (layer index, module name)


def int8_projections(num_layers: int) -> list[Projection]:
    """Every (layer, projection) int8 computes, in order."""
    return [(i, name) for i in range(num_layers)
            for name in (INT8_LAST_LAYER_PROJECTIONS if i == num_layers - 1 else INT8_PROJECTIONS)]


def calibration_batches(tokenizer, max_length: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, mask) batches of the packaged sample reviews, sorted by length (little padding)."""
    texts = calibration_texts()
    sequences = sorted((seq for encoded in tokenizer.encode(texts, max_length=max_length)
                        for seq in encoded.sequences), key=len)
    for start in range(0, len(sequences), CALIBRATION_BATCH_TEXTS):
        ids, mask = pad_batch(sequences[start:start + CALIBRATION_BATCH_TEXTS], pad_id=tokenizer.pad_id)
        yield torch.from_numpy(ids), torch.from_numpy(mask)


def calibration_texts() -> list[str]:
    """The packaged sample reviews, in file order."""
    return [line for line in CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.inference_mode()
def input_absmax(model: BertClassifier, batches) -> dict[Projection, torch.Tensor]:
    """The largest absolute value of each input channel of every int8 projection, over the real
    (unpadded) tokens of ``batches`` whose values are finite, run through the fp32 ``model``."""
    found: dict[Projection, torch.Tensor] = {}
    tokens: list[torch.Tensor] = []  # the current batch's mask, flattened

    def record(key: Projection, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1])[tokens[0]]
        rows = rows[torch.isfinite(rows).all(dim=1)]  # a token that overflowed says nothing of the range
        values = rows.abs().amax(dim=0) if len(rows) else torch.zeros(x.shape[-1])
        found[key] = torch.maximum(found[key], values) if key in found else values

    hooks = []
    for i, name in int8_projections(len(model.layers)):
        layer = model.layers[i]
        # The last layer's fp32 path slices its Q/K/V weights (no call of qkv): read the layer's input.
        module = layer if name == "qkv" else getattr(layer, name)
        hooks.append(module.register_forward_pre_hook(lambda _, args, key=(i, name): record(key, args[0])))
    try:
        for ids, mask in batches:
            tokens[:] = [mask.reshape(-1).bool()]
            model(ids, mask)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def smoothing_scale(absmax: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTHING_ALPHA) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max_i|W_ij|^(1-alpha), one per input channel of ``weight`` [out, in]."""
    tiny = torch.finfo(torch.float32).tiny
    activations = absmax.float().clamp(min=float(absmax.median()) * QUIET_CHANNEL_FLOOR).clamp(min=tiny)
    weights = weight.detach().float().abs().amax(dim=0).clamp(min=tiny)
    return activations.pow(alpha) / weights.pow(1 - alpha)


@torch.no_grad()
def fold_into_values(layer: EncoderLayer, scale: torch.Tensor) -> None:
    """Divide the attention output's input channels by ``scale`` exactly, with no run-time cost:
    that input is attention's weighted sum of values, so the value projection's output rows take
    the division and the attention output's weight columns the multiplication."""
    hidden = layer.attn_out.in_features
    layer.qkv.weight[2 * hidden:] /= scale[:, None]
    layer.qkv.bias[2 * hidden:] /= scale
    layer.attn_out.weight *= scale


def smooth_encoder(model: BertClassifier, tokenizer, *, max_length: int | None = None) -> dict[Projection, torch.Tensor]:
    """Calibrate the fp32 ``model`` on the packaged reviews, fold the attention outputs' smoothing
    into the value projections (in place: the model computes the same function), and return the
    input scales of the Q/K/V and feed-forward input projections, for the caller to apply
    (``backends.torch.Int8Linear`` or ``modeling.SmoothedLinear``)."""
    max_length = max_length or model.shape.max_position_embeddings
    absmax = input_absmax(model, calibration_batches(tokenizer, max_length))
    scales = {}
    # attn_out first: folding into the values changes the qkv weight that qkv's scale is computed from.
    for (i, name) in sorted(absmax, key=lambda key: key[1] != "attn_out"):
        layer = cast(EncoderLayer, model.layers[i])
        scale = smoothing_scale(absmax[i, name], getattr(layer, name).weight)
        if name == "attn_out":
            fold_into_values(layer, scale)
        else:
            scales[i, name] = scale
    return scales

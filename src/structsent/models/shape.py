"""The hyper-parameters that fix a BERT classifier's tensors: torch-free, so that every format
(ONNX directories too) describes its model without importing torch."""

from __future__ import annotations

import dataclasses
import enum

from ..errors import ModelFormatError

# The activations modeling.py implements (it checks that its table has exactly these names).
ACTIVATION_NAMES = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
MIN_POSITIONS = 3  # [CLS], one token, [SEP]
# LayerNorm's epsilon is added to a variance: BERTs use 1e-12 to 1e-5. One near the variance or
# above it (1e300) flattens every hidden state, and the model answers its bias for every text.
MAX_LAYER_NORM_EPS = 1e-2


class LastLayer(enum.Enum):
    """How much of the last encoder layer a path computes (its FLOPs, for utilisation)."""

    FULL = "full"  # every token through the whole layer (transformers)
    CLS_ONLY = "cls-only"  # keys and values of every token, the rest at [CLS] alone (modeling.py's cls_only)
    CLS_ONLY_QKV = "cls-only-qkv"  # queries too of every token: a quantized Q/K/V projection cannot be sliced


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertShape:
    """The hyper-parameters that fix a BERT classifier's tensors."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 2

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATION_NAMES:
            raise ModelFormatError(
                f"hidden_act={self.hidden_act!r} is not supported (known: {', '.join(ACTIVATION_NAMES)})"
            )
        if self.max_position_embeddings < MIN_POSITIONS:
            raise ModelFormatError(
                f"max_position_embeddings is {self.max_position_embeddings}: a model reads [CLS], at least one "
                f"token and [SEP], so it needs {MIN_POSITIONS} positions at least"
            )
        if not self.layer_norm_eps <= MAX_LAYER_NORM_EPS:
            raise ModelFormatError(
                f"layer_norm_eps is {self.layer_norm_eps}: above {MAX_LAYER_NORM_EPS} it flattens every hidden "
                "state (BERT models use 1e-12 to 1e-5); the config is damaged or not this model's"
            )
        if self.hidden_size % self.num_heads:
            raise ModelFormatError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )

    def encoder_flops(self, seq_len: int, *, last_layer: LastLayer = LastLayer.FULL) -> float:
        """Multiply-add FLOPs of the encoder on one text of ``seq_len`` tokens (for utilisation):
        the projections, the feed-forward and attention's two products, every layer in full but the
        last, of which ``last_layer`` says what is computed."""
        h, i, n = self.hidden_size, self.intermediate_size, seq_len
        attention = 2 * 2 * n * h  # one query's scores over n keys, and its weighted sum of n values
        per_token = 2 * (4 * h * h + 2 * h * i) + attention
        if last_layer is LastLayer.FULL:
            last = n * per_token
        else:
            queries = n if last_layer is LastLayer.CLS_ONLY_QKV else 1
            # keys and values of every token; then [CLS]'s attention, output projection and feed-forward
            last = n * 2 * 2 * h * h + queries * 2 * h * h + attention + 2 * (h * h + 2 * h * i)
        return float(n * per_token * (self.num_layers - 1) + last)

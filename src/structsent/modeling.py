"""The BERT sequence classifier that runs every supported checkpoint (BERT, StructBERT, ...).

StructBERT at inference time is BERT: post-LayerNorm encoder layers, GELU, a tanh pooler on
[CLS] and a linear head. This module computes exactly that with three speed-ups that do not
change the result: fused Q/K/V projections, PyTorch's scaled-dot-product attention, and a last
layer evaluated only at [CLS] (the only position the pooler reads).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .models.shape import ACTIVATION_NAMES, BertShape  # noqa: F401  (BertShape: part of this module's API)

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
# Activations a matrix product's epilogue can apply (torch._addmm_activation): name -> use_gelu.
# On CUDA the GELU epilogue (cuBLASLt's) is the tanh form; on a CPU it is exact GELU.
EPILOGUE_ACTIVATIONS = {"gelu": True, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "relu": False}


class Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.position = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        positions = self.position.weight[:seq_len]
        # Single-segment input: every token type id is 0.
        x = self.word(input_ids) + positions + self.token_type.weight[0]
        return self.norm(x)

    def packed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The same sums for a token stream (ids and positions of shape [tokens])."""
        return self.norm(self.word(ids) + self.position(positions) + self.token_type.weight[0])


class EncoderLayer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        h = shape.hidden_size
        self.num_heads = shape.num_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=shape.layer_norm_eps)
        self.ffn_in = nn.Linear(h, shape.intermediate_size)
        self.ffn_out = nn.Linear(shape.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=shape.layer_norm_eps)
        self.act = _ACTIVATIONS[shape.hidden_act]
        self.hidden_act = shape.hidden_act
        self.activation_in_epilogue = False  # set by BertClassifier.activation_epilogue

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, *, cls_only: bool = False
    ) -> torch.Tensor:
        h = x.shape[-1]
        if cls_only:
            # Keys and values need every position; queries and everything after need only [CLS].
            residual = x[:, :1]
            if isinstance(self.qkv, nn.Linear):
                q = F.linear(residual, self.qkv.weight[:h], self.qkv.bias[:h])
                k, v = F.linear(x, self.qkv.weight[h:], self.qkv.bias[h:]).split(h, dim=-1)
            else:  # a quantized projection cannot be sliced: project all, keep [CLS]'s query
                q, k, v = self.qkv(x).split(h, dim=-1)
                q = q[:, :1]
        else:
            residual = x
            q, k, v = self.qkv(x).split(h, dim=-1)
        attn = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask
        )
        b, _, s, _ = attn.shape
        return self._after_attention(attn.transpose(1, 2).reshape(b, s, h), residual)

    def _after_attention(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(self.attn_out(context) + residual)
        return self.ffn_norm(self.ffn_out(self._ffn_inner(x)) + x)

    def _ffn_inner(self, x: torch.Tensor) -> torch.Tensor:
        """activation(ffn_in(x)); with ``activation_in_epilogue``, one matrix product that applies the
        bias and the activation as it writes its result (no separate pass over the widest tensor)."""
        if not self.activation_in_epilogue:
            return self.act(self.ffn_in(x))
        flat = x.reshape(-1, x.shape[-1])
        inner = torch._addmm_activation(self.ffn_in.bias, flat, self.ffn_in.weight.t(),
                                        use_gelu=EPILOGUE_ACTIVATIONS[self.hidden_act])
        return inner.view(*x.shape[:-1], inner.shape[-1])

    def packed(self, x: torch.Tensor, texts: "PackedTexts", attention: "VarlenAttention", *,
               cls_only: bool = False) -> torch.Tensor:
        """The layer on a token stream ([tokens, hidden]); with ``cls_only`` it returns [texts, hidden]."""
        h = x.shape[-1]
        if cls_only:
            residual = x[texts.starts]
            if isinstance(self.qkv, nn.Linear):
                q = F.linear(residual, self.qkv.weight[:h], self.qkv.bias[:h])
                k, v = F.linear(x, self.qkv.weight[h:], self.qkv.bias[h:]).split(h, dim=-1)
            else:
                q, k, v = self.qkv(x).split(h, dim=-1)
                q = q[texts.starts]
            cu_q, max_q = texts.one_per_text, 1
        else:
            residual = x
            q, k, v = self.qkv(x).split(h, dim=-1)
            cu_q, max_q = texts.cu_lengths, texts.max_length
        q, k, v = (t.reshape(t.shape[0], self.num_heads, -1) for t in (q, k, v))  # [tokens, heads, head dim]
        context = attention(q, k, v, cu_q, texts.cu_lengths, max_q, texts.max_length)
        return self._after_attention(context.reshape(-1, h), residual)


class BertClassifier(nn.Module):
    """input_ids, attention_mask (batch x seq) -> logits (batch x num_labels)."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.embeddings = Embeddings(shape)
        self.layers = nn.ModuleList(EncoderLayer(shape) for _ in range(shape.num_layers))
        self.pooler = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.classifier = nn.Linear(shape.hidden_size, shape.num_labels)

    def activation_epilogue(self, on: bool) -> bool:
        """Apply each layer's feed-forward activation in the epilogue of the product before it (one
        pass over the widest activations fewer), or stop. Returns whether it is on: only float
        projections and the activations of EPILOGUE_ACTIVATIONS can."""
        layers = [cast(EncoderLayer, layer) for layer in self.layers]
        possible = self.shape.hidden_act in EPILOGUE_ACTIVATIONS and all(
            type(layer.ffn_in) is nn.Linear for layer in layers)
        for layer in layers:
            layer.activation_in_epilogue = on and possible
        return on and possible

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = _attention_mask(attention_mask, x.dtype)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cls_only=i == last)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(pooled)

    def forward_packed(self, texts: "PackedTexts", attention: "VarlenAttention") -> torch.Tensor:
        """Logits of packed texts (no padding anywhere): the same function as ``forward`` on the
        padded batch, with attention kept within each text by cumulative lengths."""
        x = self.embeddings.packed(texts.ids, texts.positions)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = cast(EncoderLayer, layer).packed(x, texts, attention, cls_only=i == last)
        return self.classifier(torch.tanh(self.pooler(x)))


# -- packed texts: attention without padding -------------------------------------------------------
# (q [tq, heads, d], k, v [tk, heads, d], cu_q [texts + 1], cu_k [texts + 1], max_q, max_k) -> [tq, heads, d]
VarlenAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int],
                           torch.Tensor]


@dataclasses.dataclass(frozen=True)
class PackedTexts:
    """Texts one after another as one token stream (``batching.pack_batch`` builds the arrays)."""

    ids: torch.Tensor  # [tokens] token ids
    positions: torch.Tensor  # [tokens] each token's position within its text
    cu_lengths: torch.Tensor  # [texts + 1] int32: where each text starts, then the total
    max_length: int  # tokens of the longest text

    @property
    def starts(self) -> torch.Tensor:
        """Row of each text's [CLS] in the stream."""
        return self.cu_lengths[:-1].long()

    @property
    def one_per_text(self) -> torch.Tensor:
        """Cumulative lengths of one query per text (the last layer's [CLS] queries)."""
        return torch.arange(len(self.cu_lengths), dtype=torch.int32, device=self.cu_lengths.device)


def per_text_varlen_attention(q, k, v, cu_q, cu_k, max_q: int, max_k: int) -> torch.Tensor:
    """Variable-length attention by definition: scaled-dot-product attention text by text. Any
    device. The CPU's packed attention: a small call per text and layer costs less there than the
    padding it saves in every projection (bundled model, merged batches of 31 reviews: 1.2-1.3x the
    same texts in length-planned padded calls). The yardstick the CUDA kernel is checked against."""
    out = q.new_empty(q.shape)
    starts_q, starts_k = cu_q.tolist(), cu_k.tolist()
    for a, b, c, d in zip(starts_q, starts_q[1:], starts_k, starts_k[1:]):
        heads_first = [t.transpose(0, 1)[None] for t in (q[a:b], k[c:d], v[c:d])]
        out[a:b] = F.scaled_dot_product_attention(*heads_first)[0].transpose(0, 1)
    return out


def flash_varlen_attention(q, k, v, cu_q, cu_k, max_q: int, max_k: int) -> torch.Tensor:
    """PyTorch's variable-length flash attention (CUDA, fp16/bf16), without split-KV where this
    torch can turn it off: split-KV chooses its reduction order from the batch's longest text,
    so a text's bits would depend on which texts share its batch (the padded path's do not)."""
    from torch.nn.attention.varlen import varlen_attn

    if _has_parameter(varlen_attn, "num_splits"):
        out = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, num_splits=1)
    else:
        out = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k)
    return out if isinstance(out, torch.Tensor) else out[0]


@functools.lru_cache(maxsize=None)
def _has_parameter(function, name: str) -> bool:
    return name in inspect.signature(function).parameters


def varlen_kernel_available() -> bool:
    """Whether this torch has the variable-length flash kernel and a GPU to run it on."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean (batch, 1, 1, seq) mask, or None when nothing is padded (faster kernels).

    On a GPU the "nothing padded" test would synchronise with the device, so it is left to the
    caller there (the runner decides on the host and passes None); on the CPU it is free.
    """
    if attention_mask is None:
        return None
    if attention_mask.device.type == "cpu" and bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


_HF_LAYER_NAMES = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}


def from_hf_state_dict(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map a state dict in Hugging Face BertForSequenceClassification names to this module's.

    The input must already be normalised (``bert.`` prefix, ``weight``/``bias`` names).
    Raises KeyError naming the first missing tensor.
    """
    out = {
        "embeddings.word.weight": hf["bert.embeddings.word_embeddings.weight"],
        "embeddings.position.weight": hf["bert.embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": hf["bert.embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": hf["bert.embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": hf["bert.embeddings.LayerNorm.bias"],
        "pooler.weight": hf["bert.pooler.dense.weight"],
        "pooler.bias": hf["bert.pooler.dense.bias"],
        "classifier.weight": hf["classifier.weight"],
        "classifier.bias": hf["classifier.bias"],
    }
    for i in range(num_layers):
        src = f"bert.encoder.layer.{i}."
        dst = f"layers.{i}."
        for kind in ("weight", "bias"):
            out[dst + "qkv." + kind] = torch.cat(
                [hf[f"{src}attention.self.{p}.{kind}"] for p in ("query", "key", "value")]
            )
            for hf_name, name in _HF_LAYER_NAMES.items():
                out[f"{dst}{name}.{kind}"] = hf[f"{src}{hf_name}.{kind}"]
    return out


def expected_hf_shapes(shape: BertShape) -> dict[str, tuple[int, ...]]:
    """Every tensor a BERT classifier of ``shape`` needs, in Hugging Face names, with its shape."""
    h, i = shape.hidden_size, shape.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (shape.vocab_size, h),
        "bert.embeddings.position_embeddings.weight": (shape.max_position_embeddings, h),
        "bert.embeddings.token_type_embeddings.weight": (shape.type_vocab_size, h),
        "bert.embeddings.LayerNorm.weight": (h,),
        "bert.embeddings.LayerNorm.bias": (h,),
        "bert.pooler.dense.weight": (h, h),
        "bert.pooler.dense.bias": (h,),
        "classifier.weight": (shape.num_labels, h),
        "classifier.bias": (shape.num_labels,),
    }
    dims = {
        "attention.self.query": (h, h),
        "attention.self.key": (h, h),
        "attention.self.value": (h, h),
        "attention.output.dense": (h, h),
        "attention.output.LayerNorm": (h,),
        "intermediate.dense": (i, h),
        "output.dense": (h, i),
        "output.LayerNorm": (h,),
    }
    for layer in range(shape.num_layers):
        for name, dim in dims.items():
            prefix = f"bert.encoder.layer.{layer}.{name}"
            shapes[prefix + ".weight"] = dim
            shapes[prefix + ".bias"] = (dim[0],)
    return shapes


def exportable(model):
    """The same classifier written the way ONNX Runtime's BERT fusions recognise.

    Separate Q/K/V projections, an additive mask and explicit softmax attention: the graph pattern
    that the optimizer turns into one fused Attention operator per layer. The last layer still
    computes queries (and everything after attention) only at [CLS]. Built from a
    BertClassifier's own modules (weights shared, Q/K/V split from the fused projection), so
    both forms compute the same function; the export is checked against the reference.
    """
    def split(linear: nn.Linear, parts: int) -> list[nn.Linear]:
        pieces = []
        for weight, bias in zip(linear.weight.chunk(parts), linear.bias.chunk(parts)):
            piece = nn.Linear(weight.shape[1], weight.shape[0])
            piece.weight.data.copy_(weight)
            piece.bias.data.copy_(bias)
            pieces.append(piece)
        return pieces

    class Layer(nn.Module):
        def __init__(self, layer, *, cls_only: bool) -> None:
            super().__init__()
            self.query, self.key, self.value = split(layer.qkv, 3)
            self.layer = layer
            self.cls_only = cls_only
            self.num_heads = layer.num_heads

        def heads(self, x: torch.Tensor, head_dim: int) -> torch.Tensor:
            return x.view(x.shape[0], -1, self.num_heads, head_dim).transpose(1, 2)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            batch, _, hidden = x.shape
            head_dim = hidden // self.num_heads
            residual = x[:, :1] if self.cls_only else x
            q = self.heads(self.query(residual), head_dim)
            k = self.heads(self.key(x), head_dim)
            v = self.heads(self.value(x), head_dim)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
            context = torch.matmul(torch.softmax(scores + mask_bias, dim=-1), v)
            context = context.transpose(1, 2).reshape(batch, -1, hidden)
            layer = self.layer
            x = layer.attn_norm(layer.attn_out(context) + residual)
            return layer.ffn_norm(layer.ffn_out(layer.act(layer.ffn_in(x))) + x)

    class Classifier(nn.Module):
        positions: torch.Tensor  # a buffer, registered in __init__
        def __init__(self, model) -> None:
            super().__init__()
            self.embeddings = model.embeddings
            last = len(model.layers) - 1
            self.layers = nn.ModuleList(Layer(layer, cls_only=i == last) for i, layer in enumerate(model.layers))
            self.pooler = model.pooler
            self.classifier = model.classifier
            positions = torch.arange(model.shape.max_position_embeddings)[None]
            self.register_buffer("positions", positions, persistent=False)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            emb = self.embeddings
            positions = self.positions[:, : input_ids.shape[1]]
            x = emb.word(input_ids) + emb.position(positions) + emb.token_type(torch.zeros_like(input_ids))
            x = emb.norm(x)
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, mask_bias)
            return self.classifier(torch.tanh(self.pooler(x[:, 0])))

    return Classifier(model).eval()

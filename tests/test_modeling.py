"""Our BERT module equals transformers' BertForSequenceClassification on the same weights."""

import numpy as np
import pytest
import torch

import structsent
from structsent.batching import pad_batch

from .conftest import make_hf_model

TOLERANCE = 1e-5  # absolute, on logits and probabilities, fp32
INT8_BATCH_TOLERANCE = 2e-2  # int8 logits of one text in two batches (per-batch activation scales)


def reference_logits(model, sequences):
    ids, mask = pad_batch(sequences)
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def our_logits(clf, sequences):
    ids, mask = pad_batch(sequences)
    return clf.runner.run(ids, mask)


def sample_sequences(clf, texts):
    return [e.sequences[0] for e in clf.encode(texts)]


@pytest.fixture(scope="module")
def reference_model(hf_model_dir):
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(hf_model_dir, attn_implementation="eager").eval()


def test_hf_directory_matches_transformers(hf_model_dir, reference_model, real_reviews):
    clf = structsent.load(hf_model_dir, device="cpu", backend="torch")
    seqs = sample_sequences(clf, real_reviews[:48])  # mixed lengths: padding is exercised
    np.testing.assert_allclose(our_logits(clf, seqs), reference_logits(reference_model, seqs), atol=TOLERANCE)


@pytest.mark.parametrize("layout", ["encoder", "bert"])
def test_modelscope_layouts_match_transformers(modelscope_dirs, layout, real_reviews):
    clf = structsent.load(modelscope_dirs[layout], device="cpu", backend="torch")
    assert clf.checkpoint.format == "modelscope"
    seqs = sample_sequences(clf, real_reviews[:48])
    expected = reference_logits(modelscope_dirs["model"], seqs)
    np.testing.assert_allclose(our_logits(clf, seqs), expected, atol=TOLERANCE)


def test_probabilities_match_transformers_through_the_engine(hf_model_dir, reference_model, real_reviews):
    clf = structsent.load(hf_model_dir, device="cpu", backend="torch")
    texts = real_reviews[:64]
    results = clf(texts)
    expected = torch.softmax(torch.from_numpy(reference_logits(reference_model, sample_sequences(clf, texts))), -1)
    ours = np.array([[r.scores["负面"], r.scores["正面"]] for r in results])
    np.testing.assert_allclose(ours, expected.numpy(), atol=TOLERANCE)


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_other_activations_match(tmp_path, act, real_reviews):
    from .conftest import write_tokenizer_files

    model = make_hf_model(seed=3, hidden_act=act)
    model.save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)
    clf = structsent.load(tmp_path, device="cpu", backend="torch")
    seqs = sample_sequences(clf, real_reviews[:16])
    np.testing.assert_allclose(our_logits(clf, seqs), reference_logits(model, seqs), atol=TOLERANCE)


def test_full_length_sequence_matches(hf_model_dir, reference_model):
    clf = structsent.load(hf_model_dir, device="cpu", backend="torch")
    seqs = sample_sequences(clf, ["好" * 600, "差"])  # 512 tokens (truncated) next to 3
    np.testing.assert_allclose(our_logits(clf, seqs), reference_logits(reference_model, seqs), atol=TOLERANCE)


def test_torch_runner_sends_no_mask_for_an_unpadded_batch(hf_model_dir):
    """The padded/unpadded decision is made on the host; both forms give the same logits."""
    import numpy as np

    import structsent

    runner = structsent.load(hf_model_dir, device="cpu", backend="torch", attention="padded").runner
    ids = np.array([[101, 2345, 3456, 102], [101, 4567, 102, 0]], dtype=np.int64)
    full = np.ones((1, 4), dtype=np.int64)
    assert runner.stage(ids[:1], full).mask is None
    padded = runner.stage(ids, (ids != 0).astype(np.int64))
    assert padded.mask is not None
    np.testing.assert_allclose(runner.run(ids[:1], full), runner.run(ids, (ids != 0).astype(np.int64))[:1], atol=1e-5)


def test_the_torch_free_shape_names_exactly_the_activations_the_model_implements():
    from structsent.modeling import _ACTIVATIONS
    from structsent.models.shape import ACTIVATION_NAMES

    assert tuple(_ACTIVATIONS) == ACTIVATION_NAMES


# -- packed texts (attention without padding) ----------------------------------------------------------
def _packed_and_padded(model, sequences):
    from structsent.batching import pack_batch
    from structsent.modeling import PackedTexts, per_text_varlen_attention

    ids, mask = pad_batch(sequences)
    flat, positions, cumulative, longest = pack_batch(ids, mask)
    texts = PackedTexts(torch.from_numpy(flat), torch.from_numpy(positions), torch.from_numpy(cumulative), longest)
    with torch.inference_mode():
        padded = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        packed = model.forward_packed(texts, per_text_varlen_attention).numpy()
    return packed, padded


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_packed_forward_is_the_padded_forward(hf_model_dir, precision):
    """The token-stream forward (every layer on real tokens only, attention per text by cumulative
    lengths, the last layer at [CLS] only) computes the padded forward's logits."""
    from structsent.backends.torch import build_model
    from structsent.config import Precision
    from structsent.models import load_checkpoint

    model = build_model(load_checkpoint(hf_model_dir), Precision(precision), torch.device("cpu"))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, model.shape.vocab_size, size=n) for n in (3, 40, 1, 17, 64, 2, 39)]
    packed, padded = _packed_and_padded(model, sequences)
    if precision == "int8":  # int8 scales activations per batch, and padding tokens are part of the batch
        np.testing.assert_allclose(packed, padded, atol=INT8_BATCH_TOLERANCE, rtol=0)
        return
    np.testing.assert_allclose(packed, padded, atol=TOLERANCE, rtol=0)
    alone = [_packed_and_padded(model, [s])[0][0] for s in sequences[:3]]  # a text's logits do not
    np.testing.assert_allclose(np.stack(alone), packed[:3], atol=TOLERANCE, rtol=0)  # depend on the others


@pytest.mark.parametrize("takes_num_splits", [True, False])
def test_the_flash_kernel_is_asked_for_batch_invariance_where_torch_offers_it(monkeypatch, takes_num_splits):
    """split-KV picks its reduction order from the batch's longest text; num_splits=1 turns it off.
    The kernel needs a GPU, so a stand-in records the call (its attention is the reference one)."""
    import torch.nn.attention.varlen as varlen

    from structsent.modeling import flash_varlen_attention, per_text_varlen_attention

    calls: list[dict] = []

    def with_splits(q, k, v, cu_q, cu_k, max_q, max_k, *, num_splits=None):
        calls.append({"num_splits": num_splits})
        return per_text_varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k)

    def without_splits(q, k, v, cu_q, cu_k, max_q, max_k):
        calls.append({})
        return per_text_varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k)

    monkeypatch.setattr(varlen, "varlen_attn", with_splits if takes_num_splits else without_splits)
    q = torch.randn(7, 2, 4)
    cumulative = torch.tensor([0, 3, 7], dtype=torch.int32)
    out = flash_varlen_attention(q, q, q, cumulative, cumulative, 4, 4)
    np.testing.assert_allclose(out.numpy(), per_text_varlen_attention(q, q, q, cumulative, cumulative, 4, 4).numpy())
    assert calls == [{"num_splits": 1} if takes_num_splits else {}]


# -- the feed-forward activation in its product's epilogue (torch._addmm_activation) ----------------------
# On a CPU the epilogue's GELU is exact GELU, so for "gelu" and "relu" both ways are the same maths; a
# tanh-GELU model gets exact GELU there, within 4.8e-4 of its own activation (the runner turns the
# epilogue on only on CUDA, whose GELU epilogue is the tanh form).
@pytest.mark.parametrize("act, tolerance", [("gelu", 1e-6), ("relu", 1e-6), ("gelu_new", 2e-3)])
def test_the_activation_in_the_epilogue_computes_the_same_logits(tmp_path, monkeypatch, act, tolerance):
    from structsent.backends.torch import build_model
    from structsent.config import Precision
    from structsent.models import load_checkpoint

    from .conftest import write_tokenizer_files

    make_hf_model(seed=5, hidden_act=act).save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)
    model = build_model(load_checkpoint(tmp_path), Precision.FP32, torch.device("cpu"))
    rng = np.random.default_rng(1)
    sequences = [rng.integers(0, model.shape.vocab_size, size=n) for n in (3, 40, 1, 17, 64)]
    plain_packed, plain_padded = _packed_and_padded(model, sequences)
    calls = []
    real = torch._addmm_activation
    monkeypatch.setattr(torch, "_addmm_activation", lambda *a, **k: calls.append(k["use_gelu"]) or real(*a, **k))
    assert model.activation_epilogue(True)
    fused_packed, fused_padded = _packed_and_padded(model, sequences)
    assert calls == [act != "relu"] * (2 * model.shape.num_layers)  # every layer, both forwards
    np.testing.assert_allclose(fused_padded, plain_padded, atol=tolerance, rtol=0)
    np.testing.assert_allclose(fused_packed, plain_packed, atol=tolerance, rtol=0)
    assert not model.activation_epilogue(False)
    np.testing.assert_array_equal(_packed_and_padded(model, sequences)[1], plain_padded)
    assert len(calls) == 2 * model.shape.num_layers


def test_the_epilogue_is_refused_where_a_projection_is_not_a_plain_linear(hf_model_dir):
    from structsent.backends.torch import build_model
    from structsent.config import Precision
    from structsent.models import load_checkpoint

    for precision in (Precision.FP32, Precision.INT8):
        model = build_model(load_checkpoint(hf_model_dir), precision, torch.device("cpu"))
        if precision is Precision.FP32:
            model.layers[-1].ffn_in = torch.nn.Sequential(model.layers[-1].ffn_in)  # any other module
        assert not model.activation_epilogue(True)
        assert not any(layer.activation_in_epilogue for layer in model.layers)

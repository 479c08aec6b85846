"""The engine: batch invariance, input order, duplicates, bad input, long texts, OOM back-off."""

import threading
import time

import numpy as np
import pytest

import structsent
from structsent.engine import Classifier
from structsent.errors import BadInputError, DeviceOutOfMemoryError, WorkAbandonedError
from structsent.pipeline import Lanes
from structsent.results import softmax

from .conftest import positive

# The bound the README states for fp32 on a CPU: padding and batch composition change a text's
# probabilities by rounding only (measured on the bundled model over the 2,844 reviews in
# tests/data: at most 7.0e-8 with ONNX Runtime, 4.7e-7 with PyTorch).
ALONE_VS_BATCH_TOLERANCE = 1e-6
BACKEND_TOLERANCE = 1e-5  # ONNX Runtime vs PyTorch fp32 on the same weights
PACKED = 10**9  # a per-call cost so high that batches are packed to the budget, as on a GPU


def test_alone_equals_inside_any_batch(clf, real_reviews):
    texts = real_reviews[:40] + ["好" * 300, "差"]
    alone = np.array([clf([t])[0].scores["正面"] for t in texts])
    together = positive(clf(texts))
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(texts))
    shuffled = positive(clf([texts[i] for i in perm]))
    np.testing.assert_allclose(together, alone, atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)
    np.testing.assert_allclose(shuffled, alone[perm], atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


@pytest.mark.slow  # the bundled model, each text alone
@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto on a CPU: ONNX Runtime
def test_bundled_model_alone_equals_inside_any_batch(real_reviews, backend):
    bundled = structsent.load("default", device="cpu", backend=backend)
    texts = real_reviews[::11][:48] + ["好" * 600]
    alone = np.array([bundled([t])[0].scores["正面"] for t in texts])
    perm = np.random.default_rng(1).permutation(len(texts))
    for options in ({}, {"max_batch_size": 8}):
        other = Classifier(bundled.checkpoint, bundled.runner, bundled.plan.replace(**options))
        shuffled = positive(other([texts[i] for i in perm]))
        np.testing.assert_allclose(shuffled, alone[perm], atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


@pytest.mark.parametrize("budget,cap", [(512, 1), (1024, 3), (4096, 64), (100_000, 512)])
def test_results_do_not_depend_on_batch_plan(hf_model_dir, clf, real_reviews, budget, cap):
    texts = real_reviews[:60]
    other = structsent.load(hf_model_dir, device="cpu", token_budget=budget, max_batch_size=cap)
    np.testing.assert_allclose(positive(other(texts)), positive(clf(texts)), atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


def test_output_order_equals_input_order(clf):
    # Lengths in deliberately unsorted order: the plan reorders, the results must not.
    texts = ["好" * n for n in (50, 3, 200, 7, 120, 1, 90)]
    results = clf(texts)
    alone = [clf([text])[0].scores["正面"] for text in texts]
    np.testing.assert_allclose(positive(results), alone, atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)
    assert len(set(np.round(alone, 4))) == len(texts)  # distinct, so a swap could not hide


def test_duplicates_are_computed_once(clf):
    texts = ["好评！", "差评", "好评！", "好评！", "差评"]
    results, stats = clf.label_with_stats(texts)
    assert stats.texts == 5 and stats.duplicates == 3 and stats.sequences == 2
    assert results[0] == results[2] == results[3] and results[1] == results[4]


def test_bad_input_is_flagged_and_the_rest_unaffected(clf):
    good = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"]
    mixed = [None, good[0], "", 42, "   ", good[1], "\x00\x01", "😀😂👍", "好\ud800评", "很好" * 50_000, "x" * 100_000]
    results, stats = clf.label_with_stats(mixed)
    errors = [r.error for r in results]
    assert errors[0] == "missing text (None)" and errors[2] == errors[4] == "empty text"
    assert errors[3] == "not a string (got int)" and errors[6] == "no tokens left after normalisation"
    for i in (0, 2, 3, 4, 6):
        assert results[i].label is None and results[i].score is None and results[i].scores == {}
    for i in (1, 5, 7, 8, 9, 10):
        assert results[i].ok and results[i].label in ("负面", "正面")
    assert results[9].truncated and not results[10].truncated  # one 100k-char word is one [UNK]
    np.testing.assert_allclose(positive([results[1], results[5]]), positive(clf(good)), atol=1e-6)
    assert stats.flagged == 5


def test_single_string_is_rejected_with_a_hint(clf):
    with pytest.raises(structsent.BadInputError, match=r"clf\(\[text\]\)"):
        clf("好评")


@pytest.mark.parametrize("texts,hint", [
    (None, r"got None; pass a list of strings"),
    (5, r"got int; pass a list of strings, e.g. clf\(\[str\(value\)\]\)"),
    (3.5, r"got float"),
    (b"\xe5\xa5\xbd\xe8\xaf\x84", r"got bytes: decode it first, e.g. clf\(\[data.decode\('utf-8'\)\]\)"),
    (bytearray(b"ok"), r"got a bytearray: decode it first"),
    ({"好评": 1, "差评": 0}, r"got a mapping; say which texts to label, e.g. clf\(list\(d.values\(\)\)\)"),
    ({"好评", "差评"}, r"got a set, which has no order .*clf\(sorted\(texts\)\)"),
    (frozenset({"好评"}), r"got a set, which has no order"),
], ids=["None", "int", "float", "bytes", "bytearray", "dict", "set", "frozenset"])
def test_bad_call_arguments_are_bad_input_errors_naming_the_fix(clf, texts, hint):
    with pytest.raises(structsent.BadInputError, match=r"^expected a list of texts, " + hint):
        clf(texts)
    with pytest.raises(structsent.BadInputError):
        clf.label_with_stats(texts)


def test_a_table_is_refused_not_read_as_its_column_names(clf):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"review": ["好评", "差评", "还行"]})  # as a DataFrame, it iterates its column names
    with pytest.raises(structsent.BadInputError, match=r"got a table \(Table\); pass its text column as a list"):
        clf(table)
    pandas = pytest.importorskip("pandas")
    with pytest.raises(structsent.BadInputError, match=r"got a table \(DataFrame\)"):
        clf(pandas.DataFrame({"review": ["好评", "差评", "还行"]}))


def test_arrow_arrays_and_arrays_of_rows_are_refused_naming_the_fix(clf):
    """Their items are Arrow scalars or rows, not texts: every row came back flagged "not a string"."""
    pa = pytest.importorskip("pyarrow")
    column = pa.table({"review": ["好评", "差评"]})["review"]
    for given in (column, column.combine_chunks()):
        with pytest.raises(structsent.BadInputError, match=r"got a pyarrow \w*Array; pass it as a list, "
                                                           r"e.g. clf\(column.to_pylist\(\)\)"):
            clf(given)
    assert clf(column.to_pylist()) == clf(["好评", "差评"])
    rows = np.array([["好评"], ["差评"]])
    with pytest.raises(structsent.BadInputError, match=r"got a 2-dimensional array of shape \(2, 1\); pass one "
                                                       r"text per item, e.g. clf\(array.ravel\(\).tolist\(\)\)"):
        clf(rows)
    assert clf(rows.ravel().tolist()) == clf(["好评", "差评"])


def test_a_loaded_classifier_refuses_pickling_and_copying_naming_what_to_do(clf):
    import copy
    import pickle

    for attempt in (pickle.dumps, copy.deepcopy, copy.copy):
        with pytest.raises(structsent.NotPicklableError, match=r"cannot be pickled or copied: load the model in "
                                                              r"each process"):
            attempt(clf)
    with pytest.raises(TypeError):  # what pickle's own refusals are, for callers that catch those
        pickle.dumps(clf)
    assert pickle.loads(pickle.dumps(clf(["好评"])[0])) == clf(["好评"])[0]  # results still travel


def test_ordered_collections_and_iterators_of_texts_are_accepted(clf):
    import collections

    texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了", "还行吧", "差评，用了三天就坏了"]
    expected = clf(texts)
    for given in (tuple(texts), iter(texts), (t for t in texts), collections.deque(texts),
                  np.array(texts, dtype=object)):
        assert clf(given) == expected, type(given)
    distinct = dict.fromkeys(texts)
    assert clf(distinct.keys()) == clf(list(distinct))  # a dict's keys, asked for explicitly, keep its order
    assert clf([]) == [] and clf(iter([])) == []
    flagged = clf([b"bytes inside a list", None, "好评"])  # items that are not texts: flagged rows
    assert flagged[0].error == "not a string (got bytes)" and flagged[1].error and flagged[2].ok


def test_long_text_windows_average_window_probabilities(hf_model_dir):
    windows = structsent.load(hf_model_dir, device="cpu", long_text="windows", max_length=64, window_stride=32)
    text = "".join(chr(0x4E00 + (i * 7) % 5000) for i in range(200))
    (result,) = windows([text])
    assert result.windows > 1 and not result.truncated
    encoded = windows.encode([text])[0]
    logits, _ = windows.run_logits(list(encoded.sequences))
    probs = softmax(logits)
    weights = np.array([len(s) for s in encoded.sequences], dtype=float)
    expected = (probs * weights[:, None]).sum(0) / weights.sum()
    assert result.scores["正面"] == pytest.approx(expected[1], abs=1e-9)
    # The answer's logits: its centred log-probabilities at the windows' mean logit level
    logs = np.log(expected)
    level = float((logits.mean(axis=1) * weights).sum() / weights.sum())
    assert result.logits == pytest.approx({"负面": logs[0] - logs.mean() + level, "正面": logs[1] - logs.mean() + level},
                                          abs=1e-9)
    short = windows(["好评"])[0]
    assert short.windows == 1


def test_a_windowed_texts_logits_rank_the_labels_as_its_answer_does():
    """The windows' logits, averaged, ranked the labels otherwise than their averaged probabilities
    for ~3% of long reviews (a 负面 answer, and raw_scores of 正面 0.29 against 负面 0.03)."""
    windows = structsent.load("default", device="cpu", long_text="windows", max_length=32, window_stride=16)
    rng = np.random.default_rng(5)
    clauses = ["味道不错", "服务员态度很差", "等了一个小时", "送餐很快", "环境优雅", "推荐", "有点贵", "汤都洒了"]
    texts = ["，".join(rng.choice(clauses, size=int(rng.integers(8, 30)))) for _ in range(300)]
    results = windows(texts)
    disagreed = 0
    for text, result in zip(texts, results):
        assert result.windows > 1 and result.logits is not None, text
        encoded = windows.encode([text])[0]
        logits, _ = windows.run_logits(list(encoded.sequences))
        weights = np.array([len(s) for s in encoded.sequences], dtype=float)
        scores = [result.scores[label] for label in windows.labels]
        disagreed += int(np.argmax((logits * weights[:, None]).sum(0)) != np.argmax(scores))
        z = np.array([result.logits[label] for label in windows.labels])
        assert max(result.logits, key=result.logits.__getitem__) == result.label, text
        assert softmax(z[None])[0] == pytest.approx(scores, abs=1e-12)
    assert disagreed, "no text whose averaged window logits disagree: the test proved nothing"


def test_a_text_whose_windows_agree_has_the_logits_of_one_window():
    """The logarithms of the averaged probabilities alone are all <= 0: a text one token past a
    window got other raw scores than one that fits (正面 0.981 as 0.157 below 0), and a sigmoid of
    its own label under 0.5. Where the windows' logits are equal, the answer's are those logits."""
    windows = structsent.load("default", device="cpu", long_text="windows", max_length=16, window_stride=14)
    one, two = windows(["很" * 14, "很" * 15])
    assert (one.windows, two.windows) == (1, 2) and two.scores == pytest.approx(one.scores, abs=1e-12)
    assert two.logits == pytest.approx(one.logits, abs=1e-6)
    assert max(one.logits.values()) > 0


def test_results_carry_the_model_logits(clf, hf_model_dir):
    import torch
    import transformers

    texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
    with torch.no_grad():
        expected = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.numpy()
    results = clf(texts)
    for result, row in zip(results, expected):
        assert [result.logits["负面"], result.logits["正面"]] == pytest.approx(row.tolist(), abs=1e-4)
        z = np.array([result.logits["负面"], result.logits["正面"]])
        assert result.scores["正面"] == pytest.approx(float(np.exp(z[1]) / np.exp(z).sum()), abs=1e-9)
    assert clf([None])[0].logits is None


class OutOfMemoryAbove:
    """Wraps a real runner and raises the device OOM error above a padded-token threshold."""

    def __init__(self, runner, limit):
        self.runner, self.limit, self.calls = runner, limit, []
        self.name, self.device, self.precision = runner.name, runner.device, runner.precision

    def run(self, ids, mask):
        self.calls.append(ids.shape)
        if ids.size > self.limit:
            raise DeviceOutOfMemoryError(f"fake OOM at {ids.shape}")
        return self.runner.run(ids, mask)


def test_out_of_memory_splits_the_batch_and_lowers_the_budget(clf, real_reviews):
    texts = real_reviews[:80]
    fake = OutOfMemoryAbove(clf.runner, limit=1500)
    engine = Classifier(clf.checkpoint, fake, clf.plan.replace(token_budget=8192, max_batch_size=512, batch_overhead_tokens=PACKED))
    results, stats = engine.label_with_stats(texts)
    assert stats.oom_splits > 0 and engine.token_budget < 8192
    failed = [shape for shape in fake.calls if shape[0] * shape[1] > 1500]
    # Each failure halves the budget for everything after it: a few failures, not one per batch.
    assert len(failed) == stats.oom_splits <= 4, failed
    assert fake.calls[-1][0] * fake.calls[-1][1] <= 1500
    np.testing.assert_allclose(positive(results), positive(clf(texts)), atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)
    assert len(results) == len(texts)


def test_out_of_memory_on_a_single_text_is_raised(clf):
    engine = Classifier(clf.checkpoint, OutOfMemoryAbove(clf.runner, limit=2), clf.plan)
    with pytest.raises(DeviceOutOfMemoryError):
        engine(["好评如潮"])


@pytest.mark.slow  # two more loads, one an int8 export
def test_int8_and_bf16_agree_with_fp32(hf_model_dir, clf, real_reviews):
    texts = real_reviews[:100]
    reference = positive(clf(texts))
    for precision, tolerance in (("int8", 0.05), ("bf16", 0.05)):
        fast = structsent.load(hf_model_dir, device="cpu", precision=precision)
        assert fast.runner.precision == precision
        diff = np.abs(positive(fast(texts)) - reference).max()
        assert diff < tolerance, (precision, diff)


def test_info_describes_the_engine(clf):
    info = clf.info()
    # backend "auto" on a CPU runs the ONNX export when onnxruntime is installed (the dev extras)
    assert info["labels"] == ["负面", "正面"] and info["backend"] == "onnx" and info["device"] == "cpu"
    assert info["token_budget"] == 4096 and info["precision"] == "fp32"
    # A stride only where texts are windowed (shown beside "truncate", it read as one in use)
    assert (info["long_text"], info["window_stride"]) == ("truncate", None)


def test_info_gives_the_window_stride_of_windows(hf_model_dir):
    info = structsent.load(hf_model_dir, long_text="windows", window_stride=100).info()
    assert (info["long_text"], info["window_stride"]) == ("windows", 100)


def test_torch_backend_still_available_and_equal(hf_model_dir, clf, real_reviews):
    torch_clf = structsent.load(hf_model_dir, device="cpu", backend="torch")
    assert torch_clf.info()["backend"] == "torch"
    texts = real_reviews[:50]
    np.testing.assert_allclose(positive(torch_clf(texts)), positive(clf(texts)), atol=BACKEND_TOLERANCE)


def test_cuda_request_without_gpu_is_a_config_error(hf_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(structsent.ConfigError, match="CUDA is not available"):
        structsent.load(hf_model_dir, device="cuda")


def test_bad_options_are_config_errors(hf_model_dir):
    with pytest.raises(structsent.ConfigError, match=r"^precision='fp7': expected one of auto, fp32, fp16, bf16, int8$"):
        structsent.load(hf_model_dir, precision="fp7")
    with pytest.raises(structsent.ConfigError, match="token_budget"):
        structsent.load(hf_model_dir, token_budget=10)


def test_probe_finds_the_largest_budget_that_fits(clf):
    from structsent.engine import probe_token_budget

    fake = OutOfMemoryAbove(clf.runner, limit=20_000)
    assert probe_token_budget(fake, max_length=512, ceiling=65536) == 16384
    assert all(rows * width <= 65536 for rows, width in fake.calls)
    with pytest.raises(DeviceOutOfMemoryError):
        probe_token_budget(OutOfMemoryAbove(clf.runner, limit=100), max_length=512, ceiling=4096)


class StagedOutOfMemory(OutOfMemoryAbove):
    """A runner with the staged interface whose launch or fetch fails above a size."""

    def __init__(self, runner, limit, fail_at):
        super().__init__(runner, limit)
        self.fail_at = fail_at

    def stage(self, ids, mask):
        return (ids, mask)

    def launch(self, staged):
        ids, _ = staged
        self.calls.append(ids.shape)
        if self.fail_at == "launch" and ids.size > self.limit:
            raise DeviceOutOfMemoryError("fake OOM at launch")
        return staged

    def fetch(self, launched):
        ids, mask = launched
        if self.fail_at == "fetch" and ids.size > self.limit:
            raise DeviceOutOfMemoryError("fake OOM at fetch")
        return self.runner.run(ids, mask)


@pytest.mark.parametrize("fail_at", ["launch", "fetch"])
def test_overlapped_path_recovers_from_out_of_memory(clf, real_reviews, fail_at):
    texts = real_reviews[:120]
    fake = StagedOutOfMemory(clf.runner, limit=1500, fail_at=fail_at)
    engine = Classifier(clf.checkpoint, fake, clf.plan.replace(token_budget=8192, max_batch_size=512, batch_overhead_tokens=PACKED))
    results, stats = engine.label_with_stats(texts)
    assert stats.oom_splits > 0 and len(results) == len(texts)
    np.testing.assert_allclose(positive(results), positive(clf(texts)), atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


class RecordingStagedRunner:
    """The staged interface over a real runner, recording the order of launches and fetches."""

    def __init__(self, runner):
        self.runner, self.events = runner, []
        self.name, self.device, self.precision = runner.name, runner.device, runner.precision

    def run(self, ids, mask):
        return self.runner.run(ids, mask)

    def stage(self, ids, mask):
        return (ids, mask)

    def launch(self, staged):
        self.events.append(("launch", staged[0].shape))
        return staged

    def fetch(self, launched):
        self.events.append(("fetch", launched[0].shape))
        return self.runner.run(*launched)


def test_next_batch_is_launched_before_the_previous_is_waited_for(clf, real_reviews):
    texts = real_reviews[:120]
    fake = RecordingStagedRunner(clf.runner)
    engine = Classifier(clf.checkpoint, fake, clf.plan.replace(token_budget=1024, max_batch_size=512))
    results, stats = engine.label_with_stats(texts)
    kinds = [kind for kind, _ in fake.events]
    assert stats.batches > 3 and kinds.count("launch") == kinds.count("fetch") == stats.batches
    # launch 1, launch 2, fetch 1, launch 3, fetch 2, ...: one batch always queued behind another
    assert kinds[:3] == ["launch", "launch", "fetch"]
    assert all(kinds[:i].count("launch") >= kinds[:i].count("fetch") + 1 for i in range(1, len(kinds)))
    np.testing.assert_allclose(positive(results), positive(clf(texts)), atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


def test_a_lowered_budget_applies_to_the_rest_of_the_same_call(clf, real_reviews):
    """After one out-of-memory split, the remaining planned batches are re-split before launch."""
    texts = real_reviews[:200]
    fake = StagedOutOfMemory(clf.runner, limit=3000, fail_at="launch")
    engine = Classifier(clf.checkpoint, fake, clf.plan.replace(token_budget=8192, max_batch_size=512, batch_overhead_tokens=PACKED))
    results, stats = engine.label_with_stats(texts)
    fits = [shape[0] * shape[1] <= 3000 for shape in fake.calls]
    assert stats.oom_splits >= 1 and not all(fits)
    # Only the first planned batch (and its halves) ever failed: once a part fit, nothing failed again.
    assert all(fits[fits.index(True):])
    assert len(results) == len(texts)
    np.testing.assert_allclose(positive(results), positive(clf(texts)), atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


def test_large_inputs_are_tokenized_in_chunks_with_identical_results(clf, real_reviews, monkeypatch):
    import structsent.engine as engine_module

    texts = real_reviews[:150] + [None, ""] + real_reviews[:10]  # duplicates and bad rows across chunks
    whole, whole_stats = clf.label_with_stats(texts)
    monkeypatch.setattr(engine_module, "STREAM_CHUNK_TEXTS", 16)
    chunked_clf = Classifier(clf.checkpoint, clf.runner, clf.plan.replace(max_batch_size=1))  # chunks of 32
    encoded_sizes = []
    original_encode = chunked_clf.encode
    chunked_clf.encode = lambda part: encoded_sizes.append(len(part)) or original_encode(part)
    chunked, stats = chunked_clf.label_with_stats(texts)
    assert encoded_sizes[0] == 32 and sum(encoded_sizes) == 152 and len(encoded_sizes) == 5
    assert len(chunked) == len(texts) and stats.texts == whole_stats.texts and stats.flagged == 2
    assert [r.error for r in chunked] == [r.error for r in whole]
    # The repeated texts after the bad rows may run in other batches than their first copies:
    # the same labels, and scores within the batch-invariance bound.
    labelled = [i for i, r in enumerate(whole) if r.ok]
    assert len(labelled) == len(texts) - 2 and [r.label for r in chunked] == [r.label for r in whole]
    np.testing.assert_allclose(positive([chunked[i] for i in labelled]), positive([whole[i] for i in labelled]),
                               atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


# -- non-finite outputs: errors, never labels ------------------------------------------------------
class NonFiniteFor:
    """Wraps a real runner: rows whose ids contain ``token_id`` get ``value`` as their first logit,
    as from a model that overflows on some inputs (weights that do so on every input are refused
    at load, see tests/test_models.py)."""

    def __init__(self, runner, token_id, value):
        self.runner, self.token_id, self.value = runner, token_id, value
        self.name, self.device, self.precision = runner.name, runner.device, runner.precision

    def run(self, ids, mask):
        logits = np.array(self.runner.run(ids, mask))
        logits[(ids == self.token_id).any(axis=1), 0] = self.value
        return logits


def poisoned(clf, value, token="毒"):
    (token_id,) = clf.tokenizer.content_ids([token])[0]
    return Classifier(clf.checkpoint, NonFiniteFor(clf.runner, token_id, value), clf.plan)


@pytest.mark.parametrize("value,kind", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_outputs_are_flagged_never_labelled(clf, value, kind):
    texts = ["这家外卖送得很快，味道也不错", "有毒的外卖", "差评，用了三天就坏了", "毒"]
    results, stats = poisoned(clf, value).label_with_stats(texts)
    for i in (1, 3):
        assert results[i].error == f"the model produced non-finite outputs ({kind}) for this text"
        assert results[i].label is None and results[i].score is None and results[i].scores == {}
        assert results[i].logits is None
    assert stats.flagged == 2 and results[0].ok and results[2].ok
    np.testing.assert_allclose(positive([results[0], results[2]]), positive(clf([texts[0], texts[2]])),
                               atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)


def test_one_non_finite_window_flags_the_whole_text(hf_model_dir):
    windows = structsent.load(hf_model_dir, device="cpu", long_text="windows", max_length=64, window_stride=32)
    text = "好" * 150 + "毒"
    sequences = windows.encode([text])[0].sequences
    (token_id,) = windows.tokenizer.content_ids(["毒"])[0]
    assert len(sequences) > 2 and sum(token_id in s for s in sequences) == 1  # only the last window
    (result,) = poisoned(windows, np.nan)([text])
    assert result.error == "the model produced non-finite outputs (nan) for this text" and result.label is None
    assert result.windows == len(sequences)  # what was read of it is still said (it said 1)


def test_a_flagged_text_that_was_cut_still_says_so(hf_model_dir):
    cut = structsent.load(hf_model_dir, device="cpu", max_length=16)
    (result,) = poisoned(cut, np.inf)(["毒" + "好" * 40])
    assert not result.ok and result.truncated and result.windows == 1


def test_the_postprocess_stage_refuses_non_finite_numbers():
    import warnings

    from structsent.results import non_finite_error, softmax, to_result

    logits = np.array([[np.inf, 1.0], [np.nan, 0.0], [-np.inf, 2.0], [1e308, -1e308], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning escapes to the user
        probabilities = softmax(logits)
    labels = ("负面", "正面")
    for row in range(3):
        result = to_result(probabilities[row], labels, logits=logits[row])
        assert not result.ok and result.label is None and "non-finite outputs" in result.error
    assert to_result(probabilities[3], labels).label == "负面"  # huge but finite: a label
    assert to_result(probabilities[4], labels, logits=logits[4]).label == "正面"
    assert to_result(np.array([np.nan, np.nan]), labels).error == non_finite_error(np.array([np.nan]))
    assert non_finite_error(logits[:3]) == "the model produced non-finite outputs (nan, inf, -inf) for this text"


@pytest.mark.parametrize("labels", [2, 3])
def test_the_warm_up_batch_holds_as_many_texts_as_no_label_count(tmp_path, labels):
    """A graph whose outputs are (labels, texts) passes a shape check of a square batch: the
    warm-up that checks the outputs' shape at load never holds as many texts as labels."""
    from structsent.engine import check_model_outputs

    from .conftest import make_hf_model, write_tokenizer_files

    model = make_hf_model(num_labels=labels)
    model.config.id2label = {i: f"label{i}" for i in range(labels)}
    model.config.label2id = {f"label{i}": i for i in range(labels)}
    model.save_pretrained(tmp_path)
    write_tokenizer_files(tmp_path)
    classifier = structsent.load(tmp_path, backend="torch", device="cpu")
    run, batches = classifier.runner.run, []
    classifier.runner.run = lambda ids, mask: batches.append(len(ids)) or run(ids, mask)
    check_model_outputs(classifier)
    assert batches and batches[0] != labels


def test_rows_of_one_text_get_results_that_share_nothing():
    """Repeats of a text got the very same LabelResult: changing one row's scores changed the other's."""
    clf = structsent.load("default")
    results = clf(["这家外卖送得很快", "差评", "这家外卖送得很快", "这家外卖送得很快"])
    assert results[0] == results[2] == results[3]
    assert results[0] is not results[2] and results[0].scores is not results[2].scores
    results[0].scores["正面"] = 2.0
    assert results[2].scores["正面"] < 1.0 and results[3].scores["正面"] < 1.0
    with pytest.raises(TypeError, match="unhashable type: 'LabelResult'"):  # was: unhashable type: 'dict'
        hash(results[1])


def test_encode_and_run_logits_refuse_what_label_would_never_hand_the_runtime(clf):
    """The public steps below ``label`` take only what it would give them: a lone string was
    encoded as one text per character; an id outside the vocabulary, an empty or too long
    sequence failed inside the runtime with its own error; float ids were cut to integers."""
    with pytest.raises(BadInputError, match="expected a list of texts"):
        clf.encode("好吃")
    (encoded,) = clf.encode(["好吃"])
    good = list(encoded.sequences[0])
    vocabulary = clf.checkpoint.shape.vocab_size
    bad = {
        "token ids must be in 0..": good[:-1] + [vocabulary],
        "must be in 0..": [-1, *good[1:]],
        "integer token ids": np.array(good, dtype=np.float64) + 0.5,
        "1 to ": [],
        f"1 to {clf.max_length} integer": [good[0]] * (clf.max_length + 1),
    }
    for message, sequence in bad.items():
        with pytest.raises(BadInputError, match=message):
            clf.run_logits([good, sequence])
    for not_sequences in (None, 5, "好吃", b"ab", bytearray(b"ab"), memoryview(b"ab"), {(101, 102)},
                          {"a": [101, 102]}):  # TypeError: 'NoneType' object is not iterable; a set had no order
        with pytest.raises(BadInputError, match="run_logits takes a list of token id sequences"):
            clf.run_logits(not_sequences)
    with pytest.raises(BadInputError, match="sequence 1: expected 1 to"):
        clf.run_logits([good, [good[0], [good[1]]]])  # ragged: numpy's ValueError
    logits, _ = clf.run_logits([good, np.array(good, dtype=np.int32)])
    expected = clf(["好吃"])[0].logits
    np.testing.assert_allclose(logits, [[expected["负面"], expected["正面"]]] * 2, atol=ALONE_VS_BATCH_TOLERANCE, rtol=0)
    once, _ = clf.run_logits(iter([good, good]))  # an iterator: checked and run, not used up by the checks
    np.testing.assert_array_equal(once, logits)


# -- model calls in lanes -------------------------------------------------------------------------
class MeetingRunner:
    """The real runner, counting its calls; the first call waits (up to 5 s) for a second to run
    beside it, and ``most_at_once`` says how many ever ran at once."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self.name, self.device, self.precision = runner.name, runner.device, runner.precision
        self.calls = self.running = self.most_at_once = 0
        self._lock = threading.Condition()

    def run(self, ids, mask):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self._lock.notify_all()
            self._lock.wait_for(lambda: self.most_at_once >= 2, timeout=5)
        try:
            return self._runner.run(ids, mask)
        finally:
            with self._lock:
                self.running -= 1


def test_lanes_spread_one_call_over_every_lane_and_change_no_result(clf, real_reviews):
    texts = real_reviews[:40]
    runner = MeetingRunner(clf.runner)
    engine = Classifier(clf.checkpoint, runner, clf.plan.replace(max_batch_size=4))
    lanes = Lanes(2)
    try:
        results, stats = engine.label_encoded(engine.encode(texts), lanes=lanes)
    finally:
        lanes.close(5)
    assert runner.most_at_once == 2  # (one after the other, the first call waited 5 s in vain)
    alone, alone_stats = Classifier(clf.checkpoint, clf.runner, clf.plan.replace(max_batch_size=4)).label_encoded(
        clf.encode(texts))
    assert [r.label for r in results] == [r.label for r in alone]
    np.testing.assert_allclose(positive(results), positive(alone), atol=1e-6, rtol=0)
    assert (stats.batches, stats.padded_tokens, stats.sequences) == (
        alone_stats.batches, alone_stats.padded_tokens, alone_stats.sequences) and stats.batches >= 10


def test_a_failing_call_in_lanes_is_raised_once_every_task_has_ended(clf, real_reviews):
    calls = []

    class FailingThird:
        name, device, precision = clf.runner.name, clf.runner.device, clf.runner.precision

        def run(self, ids, mask):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("the runtime failed")
            time.sleep(0.01)
            return clf.runner.run(ids, mask)

    engine = Classifier(clf.checkpoint, FailingThird(), clf.plan.replace(max_batch_size=1))
    lanes = Lanes(2)
    try:
        with pytest.raises(RuntimeError, match="the runtime failed"):
            engine.label_encoded(engine.encode(real_reviews[:200]), lanes=lanes)
        settled = len(calls)
        time.sleep(0.1)
        assert len(calls) == settled < 200  # nothing of the failed call runs after it returned; the rest was cancelled
    finally:
        lanes.close(5)


def test_abandoned_work_in_lanes_stops_at_the_next_model_call(clf, real_reviews):
    runner = MeetingRunner(clf.runner)
    engine = Classifier(clf.checkpoint, runner, clf.plan.replace(max_batch_size=1))
    lanes = Lanes(2)
    try:
        with pytest.raises(WorkAbandonedError):
            engine.label_encoded(engine.encode(real_reviews[:100]), lanes=lanes, abandon=lambda: runner.calls >= 6)
    finally:
        lanes.close(5)
    assert runner.calls < 10  # of 100 model calls


def test_label_encoded_refuses_what_encode_would_never_return(clf):
    """label_encoded ran what it was given: ids past the vocabulary, empty or too long sequences
    failed inside the runtime with its own errors (ONNX Runtime's InvalidArgument, torch's
    IndexError), float ids were cut to integers and labelled, another classifier's longer
    encodings ran past this one's max_length, and an EncodedText with neither sequences nor an
    error was flagged as non-finite output."""
    from structsent.tokenize import EncodedText

    (encoded,) = clf.encode(["好吃"])
    good = np.asarray(encoded.sequences[0])
    vocabulary = clf.checkpoint.shape.vocab_size
    bad = {
        "sequence 1: token ids must be in 0..": np.append(good[:-1], vocabulary),
        "sequence 1: expected 1 to .* integer token ids, got float64": good + 0.5,
        "sequence 1: expected 1 to .* of shape \\(0,\\)": np.array([], dtype=np.int64),
        f"sequence 1: expected 1 to {clf.max_length} integer token ids, got int64 of shape \\({clf.max_length + 1},\\)":
            np.full(clf.max_length + 1, good[0]),
    }
    for message, sequence in bad.items():
        with pytest.raises(BadInputError, match=message):
            clf.label_encoded([encoded, EncodedText(sequences=(sequence,))])
    for not_encodings, message in ((None, "label_encoded takes the list encode\\(\\) returns, got NoneType"),
                                   ("好吃", "label_encoded takes the list encode\\(\\) returns, got str"),
                                   (["好吃"], "item 0: expected an EncodedText .* got str"),
                                   ([encoded, EncodedText()], "item 1: an EncodedText without sequences must say why")):
        with pytest.raises(BadInputError, match=message):
            clf.label_encoded(not_encodings)
    short = structsent.load("default", max_length=8)
    (longer,) = clf.encode(["这家店的菜很好吃，服务也很周到，下次还会再来"])
    with pytest.raises(BadInputError, match="sequence 0: expected 1 to 8 integer token ids"):
        short.label_encoded([longer])
    results, stats = clf.label_encoded(iter([encoded, EncodedText(error="empty text"), encoded]))
    assert [r.label for r in results] == [clf(["好吃"])[0].label, None, clf(["好吃"])[0].label]
    assert results[1].error == "empty text" and stats.sequences == 2

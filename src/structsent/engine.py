"""The classifier: tokenize -> plan batches -> run the model -> postprocess, in input order."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, Set

import numpy as np

from .backends import PipelinedRunner
from .batching import Batch, batch_cost, pad_batch, padded_length, padding_fraction, plan_batches
from .errors import BadInputError, DeviceOutOfMemoryError, ModelFormatError, NotPicklableError, WorkAbandonedError
from .lines import one_line
from .pipeline import Lanes, Prefetch, quick_gil_handoff
from .plan import RuntimePlan
from .results import (
    LabelResult,
    SingleRowResults,
    combine_windows,
    non_finite_error,
    non_finite_kinds,
    to_result,
    windows_logits,
)
from .tokenize import EncodedText
from .tokenize_processes import EncodingOptions

log = logging.getLogger("structsent.engine")

# Run once at load (see check_model_outputs): two lengths, so that the batch is padded and masked.
WARMUP_TEXTS = ("这家外卖送得很快，味道也不错", "差评")

# Inputs above this many distinct texts are tokenized chunk by chunk, overlapped with the model
# (batches are then planned within a chunk: at this size that costs almost no extra padding).
STREAM_CHUNK_TEXTS = 8192


@dataclasses.dataclass
class RunStats:
    """What one call cost: for progress lines, summaries and benchmarks."""

    texts: int = 0
    duplicates: int = 0
    flagged: int = 0
    sequences: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_splits: int = 0

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.real_tokens, self.padded_tokens)

    def add(self, other: "RunStats") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class Classifier:
    """Labels texts with one model on one runtime.

    >>> import structsent
    >>> clf = structsent.load("default")                       # doctest: +SKIP
    >>> clf(["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"])   # doctest: +SKIP
    [LabelResult(label='正面', ...), LabelResult(label='负面', ...)]
    """

    def __init__(self, checkpoint, runner, plan: RuntimePlan) -> None:
        self.checkpoint = checkpoint
        self.runner = runner
        self.plan = plan
        self.tokenizer = checkpoint.tokenizer
        self.labels: tuple[str, ...] = tuple(checkpoint.labels)
        # The one number the engine owns: lowered by the CUDA probe and after an out-of-memory split.
        self.token_budget = plan.token_budget
        if plan.probe_token_budget:
            self.token_budget = probe_token_budget(runner, max_length=plan.max_length, ceiling=plan.token_budget)

    def __reduce_ex__(self, protocol):
        """Refused: a loaded model is not sent to another process (pickle) or copied; its runtime's
        sessions and threads belong to this one (onnxruntime raised a bare TypeError from inside)."""
        raise NotPicklableError(
            f"a loaded Classifier ({self.checkpoint.directory}) cannot be pickled or copied: load the model "
            "in each process that uses it (structsent.load(name)) and pass the model's name or path instead")

    # Everything else is the plan's, read where it is kept.
    @property
    def max_length(self) -> int:
        return self.plan.max_length

    @property
    def window_stride(self) -> int:
        return self.plan.window_stride

    @property
    def max_batch_size(self) -> int:
        return self.plan.max_batch_size

    @property
    def batch_overhead(self) -> int | None:
        """The planner's per-call cost; None where batches are filled greedily (GPUs, and packed
        attention, where a call computes no padding to weigh against its cost)."""
        return None if self.packed_attention else self.plan.batch_overhead_tokens

    @property
    def pad_multiple(self) -> int | None:
        return self.plan.pad_multiple

    def __call__(self, texts: Iterable[object]) -> list[LabelResult]:
        return self.label_with_stats(texts)[0]

    def label(self, texts: Iterable[object]) -> list[LabelResult]:
        """Label ``texts`` (a list, tuple or any other ordered collection or iterator of strings);
        the i-th result belongs to the i-th text. Raises BadInputError for anything else."""
        return self.label_with_stats(texts)[0]

    def label_with_stats(self, texts: Iterable[object]) -> tuple[list[LabelResult], RunStats]:
        texts = as_text_list(texts)
        unique_index, unique_texts = deduplicate(texts)
        unique_results, stats = self._label_unique(unique_texts)
        stats.texts = len(texts)
        stats.duplicates = len(texts) - len(unique_texts)
        results = _one_result_per_row(unique_results, unique_index)
        stats.flagged = sum(1 for r in results if r.error is not None)
        return results, stats

    def _label_unique(self, texts: list[object]) -> tuple[list[LabelResult], RunStats]:
        """Tokenize and run; a large input goes in chunks, the next tokenized while the model runs."""
        chunk = max(STREAM_CHUNK_TEXTS, 32 * self.max_batch_size)
        if len(texts) <= chunk:
            return self._label_own_encodings(self.encode(texts))
        results: list[LabelResult] = []
        stats = RunStats()
        parts = (texts[start : start + chunk] for start in range(0, len(texts), chunk))
        with quick_gil_handoff(self.runner.device), \
                Prefetch(map(self.encode, parts), depth=2, name="structsent-tokenize") as encoded_parts:
            for encoded in encoded_parts:
                part_results, part_stats = self._label_own_encodings(encoded)
                results += part_results
                stats.add(part_stats)
        return results, stats

    # -- stages -------------------------------------------------------------------------------
    def encode(self, texts: Sequence[object], options: EncodingOptions | None = None) -> list[EncodedText]:
        """Token ids of ``texts`` cut as ``options`` say (default: the plan's ``encoding_options()``).
        ``texts`` as ``label`` takes them (a lone string is refused: it was encoded as one text per character)."""
        options = options or self.encoding_options()
        return self.tokenizer.encode(as_text_list(texts), max_length=options.max_length, long_text=options.long_text,
                                     window_stride=options.window_stride, keep_end=options.keep_end)

    def encoding_options(self) -> EncodingOptions:
        """How texts are cut to the model (tokenizer processes apply the same)."""
        return EncodingOptions(max_length=self.max_length, long_text=self.plan.long_text,
                               window_stride=self.window_stride)

    def label_encoded(self, encoded: Sequence[EncodedText], *, abandon: Callable[[], bool] | None = None,
                      lanes: Lanes | None = None) -> tuple[list[LabelResult], RunStats]:
        """Run already-encoded texts; results in the same order. ``abandon``, asked before each
        model call, ends the work with WorkAbandonedError once it says True (no one waits for it).
        ``lanes``: the model calls run on these threads, side by side with other callers' (CPU
        runtimes, whose calls may run at once; a GPU runner's staging serves one call at a time).

        A text's rows are consecutive in the run (one row per window); a text of one finite row,
        the usual case, takes the vectorised postprocess, any other text the general one.

        ``encoded`` is what ``encode`` returns; anything else (another classifier's encodings longer
        than this one's ``max_length``, ids past its vocabulary, float ids, an item that is no
        EncodedText) is a BadInputError, as in ``run_logits``.
        """
        return self._label_own_encodings(self._checked_encodings(encoded), abandon, lanes)

    def _label_own_encodings(self, encoded: list[EncodedText], abandon: Callable[[], bool] | None = None,
                             lanes: Lanes | None = None) -> tuple[list[LabelResult], RunStats]:
        """``label_encoded`` for what this classifier's own ``encode`` just returned: not checked again."""
        sequences = [s for e in encoded for s in e.sequences]
        logits, stats = self._run_sequences(sequences, abandon, lanes)
        rows = SingleRowResults(logits, self.labels)
        results: list[LabelResult] = []
        start = 0
        for e in encoded:
            count = len(e.sequences)
            if count == 1 and e.error is None and rows.finite(start):
                results.append(rows.result(start, truncated=e.truncated))
            else:
                window = slice(start, start + count)
                results.append(_postprocess(e, rows.probabilities[window], logits[window],
                                            [len(s) for s in e.sequences], self.labels))
            start += count
        return results, stats

    def run_logits(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, RunStats]:
        """Logits (n x labels, float64) of id sequences, planned into token-budget batches. Each
        sequence holds 1 to ``max_length`` integer ids of the model's vocabulary (else BadInputError)."""
        # The kinds ``label`` refuses as texts (no order, a lone str or bytes, a table) are no list of sequences either.
        if _why_not_texts(sequences) is not None or not isinstance(sequences, Iterable):
            raise BadInputError(f"run_logits takes a list of token id sequences (logits come back in its order), "
                                f"got {type(sequences).__name__}")
        sequences = list(sequences)  # (an iterator is read once, here: the checks and the run see the same)
        self._check_sequences(sequences)
        return self._run_sequences(sequences)

    def _checked_encodings(self, encoded: Sequence[EncodedText]) -> list[EncodedText]:
        """``encoded`` as a list, if it is encodings this classifier can run (else BadInputError).
        The runtimes failed on the others with their own errors, or ran float ids cut to integers,
        or sequences longer than ``max_length`` that another classifier had encoded."""
        if _why_not_texts(encoded) is not None or not isinstance(encoded, Iterable):
            raise BadInputError(f"label_encoded takes the list encode() returns, got {type(encoded).__name__}")
        encoded = list(encoded)
        for index, item in enumerate(encoded):
            if not isinstance(item, EncodedText):
                raise BadInputError(f"item {index}: expected an EncodedText (as encode() returns), got "
                                    f"{type(item).__name__}")
            if not item.sequences and item.error is None:
                raise BadInputError(f"item {index}: an EncodedText without sequences must say why (its error)")
        self._check_sequences([s for e in encoded for s in e.sequences])
        return encoded

    def _check_sequences(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> None:
        """Every sequence one the runtime can take (``_check_sequence``): checked all at once (~2.5 ms
        for 8,192 reviews), then one by one only to name the first that is not."""
        if self._all_runnable(sequences):
            return
        for index, sequence in enumerate(sequences):
            self._check_sequence(index, sequence)

    def _all_runnable(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> bool:
        if not sequences:
            return True
        if not all(1 <= len(s) <= self.max_length for s in sequences):
            return False
        try:
            ids = np.concatenate([np.asarray(s) for s in sequences])
        except (ValueError, TypeError):  # ragged or mixed nesting
            return False
        return (ids.ndim == 1 and ids.dtype.kind in "iu" and int(ids.min()) >= 0
                and int(ids.max()) < self.checkpoint.shape.vocab_size)

    def _check_sequence(self, index: int, sequence: Sequence[int] | np.ndarray) -> None:
        """A sequence the runtime can take: it failed inside the runtime with its own error, or ran
        float ids cut to integers (a sequence of the tokenizer's own is always one)."""
        try:
            ids = np.asarray(sequence)
        except (ValueError, TypeError):  # ragged nesting: [1, [2, 3]]
            raise BadInputError(f"sequence {index}: expected 1 to {self.max_length} integer token ids") from None
        vocabulary = self.checkpoint.shape.vocab_size
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or not 1 <= len(ids) <= self.max_length:
            raise BadInputError(f"sequence {index}: expected 1 to {self.max_length} integer token ids, got "
                                f"{ids.dtype} of shape {ids.shape}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocabulary:
            raise BadInputError(f"sequence {index}: token ids must be in 0..{vocabulary - 1} (the model's "
                                f"vocabulary), got {int(ids.min())}..{int(ids.max())}")

    def _run_sequences(self, sequences: Sequence[Sequence[int] | np.ndarray],
                       abandon: Callable[[], bool] | None = None,
                       lanes: Lanes | None = None) -> tuple[np.ndarray, RunStats]:
        stats = RunStats(sequences=len(sequences), real_tokens=sum(len(s) for s in sequences))
        lengths = self._padded_lengths(sequences)
        out = np.zeros((len(sequences), len(self.labels)), dtype=np.float64)
        batches: Iterable[Batch] = self._within_budget(self._plan(lengths), lengths)
        if lanes is not None:
            self._run_in_lanes(list(batches), sequences, lengths, stats, out, lanes, abandon)
            return out, stats
        if abandon is not None:
            batches = _until_abandoned(batches, abandon)
        if isinstance(self.runner, PipelinedRunner):
            self._run_overlapped(batches, sequences, lengths, stats, out)
        else:
            for batch in batches:
                out[list(batch)] = self._run_batch(batch, sequences, lengths, stats)
        return out, stats

    def _padded_lengths(self, sequences: Sequence[Sequence[int] | np.ndarray]) -> list[int]:
        """The length each sequence is padded to at least (its own, unless ``pad_multiple`` is set)."""
        if self.pad_multiple is None:
            return [len(s) for s in sequences]
        return [padded_length(len(s), self.pad_multiple, self.max_length) for s in sequences]

    def _plan(self, lengths: Sequence[int]) -> list[Batch]:
        """Batches of indices into ``lengths`` under the current budget (see ``plan_batches``)."""
        return plan_batches(lengths, token_budget=self.token_budget, max_batch_size=self.max_batch_size,
                            batch_overhead=self.batch_overhead, uniform=self.pad_multiple is not None,
                            packed=self.packed_attention)

    def _cost(self, batch: Batch, lengths: Sequence[int]) -> int:
        """What ``batch`` costs against the token budget (``batch_cost``: real tokens when packed)."""
        return batch_cost(batch, lengths, packed=self.packed_attention)

    def _pad(self, batch: Batch, sequences, lengths) -> tuple[np.ndarray, np.ndarray]:
        return pad_batch([sequences[i] for i in batch], self.tokenizer.pad_id, max(lengths[i] for i in batch))

    @property
    def packed_attention(self) -> bool:
        """Whether the runner computes attention over packed texts (it packs every batch the engine pads)."""
        return bool(getattr(self.runner, "packed", False))

    def _computed_tokens(self, ids: np.ndarray, mask: np.ndarray) -> int:
        """Token positions the model computes for a padded batch: every one, or with packed
        attention the real tokens only."""
        return int(mask.sum()) if self.packed_attention else ids.size

    def _within_budget(self, plan, lengths):
        """The planned batches, each re-split if the budget was lowered (out of memory) since planning."""
        for batch in plan:
            if self._cost(batch, lengths) <= self.token_budget:
                yield batch
                continue
            for part in self._plan([lengths[i] for i in batch]):
                yield tuple(batch[j] for j in part)

    def _run_in_lanes(self, batches: list[Batch], sequences, lengths, stats: RunStats, out: np.ndarray,
                      lanes: Lanes, abandon: Callable[[], bool] | None) -> None:
        """Each planned batch a task of ``lanes``: a large call's batches spread over every lane
        that other calls leave free. Each writes its own rows of ``out``; every task has ended
        (run, failed or cancelled) before this returns or raises, the first failure in plan order."""

        def run(batch: Batch) -> RunStats:
            if abandon is not None:
                _check_not_abandoned(abandon)
            own = RunStats()
            out[list(batch)] = self._run_batch(batch, sequences, lengths, own)
            return own

        tasks = [lanes.submit(run, batch) for batch in batches]
        try:
            for task in tasks:
                stats.add(task.result())  # (a task's own stats count only its batches, tokens and splits)
        finally:
            for task in tasks:
                task.cancel()
            concurrent.futures.wait(tasks)

    def _run_overlapped(self, batches, sequences, lengths, stats: RunStats, out: np.ndarray) -> None:
        """Keep one batch queued on the device behind the one computing: batch i+1 is padded,
        copied and launched before batch i is waited for, so the device never waits on the host."""
        in_flight: collections.deque = collections.deque()  # (batch, launched, padded size)
        for batch in batches:
            ids, mask = self._pad(batch, sequences, lengths)
            launched = self._try_launch(ids, mask)
            if launched is None:  # out of memory: finish what is in flight, then split this one
                while in_flight:
                    self._finish(in_flight.popleft(), sequences, lengths, stats, out)
                out[list(batch)] = self._run_batch(batch, sequences, lengths, stats)
                continue
            in_flight.append((batch, launched, self._computed_tokens(ids, mask)))
            if len(in_flight) > 1:
                self._finish(in_flight.popleft(), sequences, lengths, stats, out)
        while in_flight:
            self._finish(in_flight.popleft(), sequences, lengths, stats, out)

    def _try_launch(self, ids: np.ndarray, mask: np.ndarray):
        try:
            return self.runner.launch(self.runner.stage(ids, mask))
        except DeviceOutOfMemoryError:
            return None

    def _finish(self, entry, sequences, lengths, stats: RunStats, out: np.ndarray) -> None:
        batch, launched, size = entry
        try:
            logits = self.runner.fetch(launched)
        except DeviceOutOfMemoryError:  # asynchronous device errors surface at the wait
            logits = None
        if logits is None:
            out[list(batch)] = self._run_batch(batch, sequences, lengths, stats)
            return
        out[list(batch)] = logits
        stats.batches += 1
        stats.padded_tokens += size

    def _run_batch(self, batch: Batch, sequences, lengths, stats: RunStats) -> np.ndarray:
        """Run one batch; on device out-of-memory, halve it and lower the budget for the rest.

        The retry happens outside the ``except`` block, so that nothing of the failed attempt
        (its traceback holds the device tensors) is alive while the halves run.
        """
        ids, mask = self._pad(batch, sequences, lengths)
        try:
            logits = self.runner.run(ids, mask)
        except DeviceOutOfMemoryError:
            if len(batch) == 1:
                raise
            logits = None
        if logits is not None:
            stats.batches += 1
            stats.padded_tokens += self._computed_tokens(ids, mask)
            if len(batch) > 1 and self._taints_batch(logits):
                return self._run_halves(batch, sequences, lengths, stats)
            return logits
        stats.oom_splits += 1
        self.token_budget = max(self.max_length, min(self.token_budget, self._cost(batch, lengths) // 2))
        return self._run_halves(batch, sequences, lengths, stats)

    def _run_halves(self, batch: Batch, sequences, lengths, stats: RunStats) -> np.ndarray:
        half = len(batch) // 2
        return np.concatenate(
            [self._run_batch(part, sequences, lengths, stats) for part in (batch[:half], batch[half:])]
        )

    def _taints_batch(self, logits: np.ndarray) -> bool:
        """Non-finite logits from a runner whose non-finite values spread over the whole batch
        (int8 graphs): which text caused them is found by computing the batch again in halves."""
        return bool(getattr(self.runner, "non_finite_taints_batch", False)) and not np.isfinite(logits).all()

    def info(self) -> dict:
        """What is loaded and how it runs (for /info, summaries and benchmarks)."""
        return {
            "model": str(self.checkpoint.directory),
            "format": self.checkpoint.format,
            "labels": list(self.labels),
            "backend": self.runner.name,
            "device": self.runner.device,
            "precision": self.runner.precision,
            "max_length": self.max_length,
            "token_budget": self.token_budget,
            "max_batch_size": self.max_batch_size,
            "batch_overhead_tokens": self.batch_overhead,
            "pad_multiple": self.pad_multiple,
            "num_threads": self.plan.num_threads,
            "long_text": self.plan.long_text.value,
            # (None where texts are cut, not windowed: a stride shown there read as one in use)
            "window_stride": self.window_stride if self.plan.long_text.value == "windows" else None,
            "attention": "packed" if self.packed_attention else "padded",
            # the feed-forward activation applied in its product's epilogue (torch, CUDA fp16/bf16)
            "activation_epilogue": bool(getattr(self.runner, "activation_epilogue", False)),
        }


def probe_token_budget(runner, *, max_length: int, ceiling: int, floor: int | None = None) -> int:
    """The largest padded-token budget (halving from ``ceiling``) whose worst-case batch runs.

    The probe batch is all sequences of ``max_length`` tokens, the most memory a batch within
    the budget can need. Raises DeviceOutOfMemoryError if not even ``floor`` fits.
    """
    floor = floor or max_length
    budget = ceiling
    while True:
        rows = max(budget // max_length, 1)
        ids = np.full((rows, max_length), 100, dtype=np.int64)  # [UNK]: any valid id does
        try:
            runner.run(ids, np.ones_like(ids))
            return budget
        except DeviceOutOfMemoryError:
            if budget // 2 < floor:
                raise
            budget //= 2


def _until_abandoned(batches: Iterable[Batch], abandon: Callable[[], bool]) -> Iterator[Batch]:
    """``batches``, each handed on only while ``abandon()`` says False (asked before each model call)."""
    for batch in batches:
        _check_not_abandoned(abandon)
        yield batch


def _check_not_abandoned(abandon: Callable[[], bool]) -> None:
    """WorkAbandonedError once ``abandon()`` says True (asked before each model call)."""
    if abandon():
        raise WorkAbandonedError("the work was abandoned before all of it was computed (no one waits for it)")


def as_text_list(texts: object) -> list[object]:
    """The texts of one call as a list, in their order, or BadInputError naming the fix when
    ``texts`` is not an ordered collection (or iterator) of texts. Items that are not strings
    are kept: each gets a flagged result of its own."""
    refusal = _why_not_texts(texts)
    if refusal is None:
        try:
            items = iter(texts)  # type: ignore[call-overload]
        except TypeError:  # an int, a float, an object...
            refusal = f"got {type(texts).__name__}; pass a list of strings, e.g. clf([str(value)])"
        else:
            return list(items)
    raise BadInputError(f"expected a list of texts, {refusal}")


def _why_not_texts(texts: object) -> str | None:
    if texts is None:
        return "got None; pass a list of strings, e.g. clf(['味道不错'])"
    if isinstance(texts, (KeysView, ItemsView)):  # ordered like their dict, and chosen explicitly
        return None
    if hasattr(texts, "columns") and hasattr(texts, "shape"):  # a DataFrame or table iterates its column names
        return (f"got a table ({type(texts).__name__}); pass its text column as a list, "
                "e.g. clf(df['text'].tolist())")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:  # its items would be rows, not texts
        return (f"got a {texts.ndim}-dimensional array of shape {texts.shape}; pass one text per item, "
                "e.g. clf(array.ravel().tolist())")
    if type(texts).__module__.startswith("pyarrow") and hasattr(texts, "to_pylist"):  # items are Arrow scalars
        return f"got a pyarrow {type(texts).__name__}; pass it as a list, e.g. clf(column.to_pylist())"
    return next((fix for kind, fix in _HOW_TO_PASS_TEXTS.items() if isinstance(texts, kind)), None)


# What a wrongly typed argument is and how to pass it instead; checked in this order (a str is
# also a Sequence, a dict view of keys also a Set).
_HOW_TO_PASS_TEXTS: dict[type, str] = {
    str: "got a single string; wrap it: clf([text])",
    bytes: "got bytes: decode it first, e.g. clf([data.decode('utf-8')])",
    bytearray: "got a bytearray: decode it first, e.g. clf([data.decode('utf-8')])",
    memoryview: "got a memoryview: decode it first, e.g. clf([bytes(data).decode('utf-8')])",
    Mapping: "got a mapping; say which texts to label, e.g. clf(list(d.values())) or clf(list(d))",
    Set: "got a set, which has no order (results come back in input order); "
         "pass a list, e.g. clf(sorted(texts))",
}


def check_model_outputs(classifier: Classifier) -> None:
    """Run one tiny batch and refuse a model that cannot give labels, with ModelFormatError.

    Catches at load what would otherwise flag every row later: weights that hold NaN or inf (or
    overflow at this precision), and a label list that does not match the model's outputs. It
    costs one forward pass of three short texts, and doubles as the runtime's first (slow) call.
    """
    # As many texts as labels would let a graph whose outputs are (labels, texts) pass as (texts, labels).
    texts = WARMUP_TEXTS if len(WARMUP_TEXTS) != len(classifier.labels) else (*WARMUP_TEXTS, "一般")
    sequences = [s for e in classifier.encode(texts) for s in e.sequences]
    ids, mask = pad_batch(sequences, classifier.tokenizer.pad_id)
    logits = np.asarray(classifier.runner.run(ids, mask))
    model = classifier.checkpoint.directory
    expected = (len(sequences), len(classifier.labels))
    if logits.shape != expected:
        raise ModelFormatError(
            f"{model}: the model gives outputs of shape {logits.shape} for {len(sequences)} texts, "
            f"expected {expected}, one per label {list(classifier.labels)}; the labels in its config "
            "do not belong to these weights"
        )
    kinds = non_finite_kinds(logits)
    if kinds:
        runner = classifier.runner
        raise ModelFormatError(
            f"{model}: the weights give non-finite outputs ({', '.join(kinds)}) on a warm-up batch of "
            f"{len(sequences)} short texts ({runner.name}, {runner.precision}, {runner.device}); "
            + _non_finite_culprit(runner.precision)
        )
    if (logits == logits[0]).all():
        log.warning(
            "%s: the model gives every warm-up text the same outputs %s: its weights look zeroed or untrained, and "
            "its labels will not depend on the text", one_line(str(model)), np.round(logits[0], 6).tolist())


def _non_finite_culprit(precision: str) -> str:
    # The weights of PyTorch-format checkpoints were already found finite when they were read.
    if precision in ("fp16", "bf16"):
        return f"the model overflows at {precision}: try precision='fp32'"
    return "the weights are corrupt (NaN or inf values) or overflow on ordinary text"


def _one_result_per_row(unique_results: list[LabelResult], unique_index: list[int]) -> list[LabelResult]:
    """The result of each row; a text met again gets a copy of its first row's, so that no two rows
    share a ``scores`` dict that one of them may change."""
    results = [unique_results[i] for i in unique_index]
    if len(unique_results) == len(results):
        return results
    first = [False] * len(unique_results)
    for row, i in enumerate(unique_index):
        if first[i]:
            results[row] = results[row].copy()
        first[i] = True
    return results


def deduplicate(texts: list[object]) -> tuple[list[int], list[object]]:
    """Map each valid text to the index of its first equal text among the unique ones."""
    first: dict[str, int] = {}
    unique: list[object] = []
    index: list[int] = []
    for text in texts:
        if isinstance(text, str) and not text.isspace() and text:  # bad texts are flagged, not reused
            slot = first.get(text)
            if slot is None:
                slot = first[text] = len(unique)
                unique.append(text)
        else:
            slot = len(unique)
            unique.append(text)
        index.append(slot)
    return index, unique


def _postprocess(encoded: EncodedText, probabilities: np.ndarray, logits: np.ndarray, lengths: list[int],
                 labels) -> LabelResult:
    if encoded.error is not None:
        return LabelResult.failed(encoded.error)
    non_finite = non_finite_error(logits)  # every window's raw row: one bad window spoils the text
    if non_finite is not None:
        return LabelResult.failed(non_finite, truncated=encoded.truncated, windows=len(probabilities))
    if len(probabilities) == 1:
        return to_result(probabilities[0], labels, truncated=encoded.truncated, logits=logits[0])
    combined = combine_windows(probabilities, lengths)
    return to_result(combined, labels, windows=len(probabilities), logits=windows_logits(combined, logits, lengths))

"""The MicroBatcher alone: merging, budgets, cancellation, failures, admission, draining."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from structsent.errors import OverloadedError, WorkAbandonedError
from structsent.server.batcher import BatchFailedError, MicroBatcher, WorkerStoppedError


class RecordingClassifier:
    """The real tiny classifier, recording every batch it is given; can be gated and made to fail."""

    def __init__(self, classifier) -> None:
        self._classifier = classifier
        self.token_budget = classifier.token_budget
        self.max_batch_size = classifier.max_batch_size
        self.batches: list[int] = []  # texts per call
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False

    def encode(self, texts):
        return self._classifier.encode(texts)

    def label_encoded(self, encoded, *, abandon=None, **options):
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        if any(e.sequences for e in encoded):
            self.batches.append(len(encoded))
        return self._classifier.label_encoded(encoded, abandon=abandon, **options)


class SlowRunner:
    """A real runner, 10 ms slower a call, counting its calls."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.name, self.device, self.precision = runner.name, runner.device, runner.precision
        self.calls = 0

    def run(self, ids, mask):
        self.calls += 1
        time.sleep(0.01)
        return self.runner.run(ids, mask)


@pytest.fixture
def recording(clf):
    return RecordingClassifier(clf)


def started(classifier, **options) -> MicroBatcher:
    options = {"max_wait_s": 0.2, "max_queue": 64, **options}
    batcher = MicroBatcher(classifier, **options)
    batcher.start()
    return batcher


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_merge_into_one_batch_and_keep_their_results(recording, clf, real_reviews, workers):
    batcher = started(recording, workers=workers)  # one worker gathers at a time, however many there are
    texts = real_reviews[:6]
    futures = [batcher.submit(clf.encode([t])) for t in texts]
    results = [f.result(10)[0] for f in futures]
    assert batcher.stop(10)
    assert recording.batches == [6]
    alone = clf(texts)
    for merged, single in zip(results, alone):
        assert merged.label == single.label
        assert merged.score == pytest.approx(single.score, abs=1e-5)


def test_token_budget_splits_merged_work(recording, clf):
    # Every text is 12 tokens long ([CLS] + 10 + [SEP]): a budget of 48 holds four of them.
    batcher = started(recording, token_budget=48)
    futures = [batcher.submit(clf.encode(["好" * 10])) for _ in range(10)]
    for future in futures:
        assert future.result(10)[0].ok
    batcher.stop(10)
    assert recording.batches == [4, 4, 2]


def test_max_batch_size_one_serves_requests_alone(recording, clf):
    batcher = started(recording, max_batch_size=1, max_wait_s=0.05)
    futures = [batcher.submit(clf.encode(["不错"])) for _ in range(3)]
    [f.result(10) for f in futures]
    batcher.stop(10)
    assert recording.batches == [1, 1, 1]


def test_a_lone_request_waits_at_most_max_wait(recording, clf):
    batcher = started(recording, max_wait_s=0.3)
    begun = time.monotonic()
    batcher.submit(clf.encode(["还行"])).result(10)
    waited = time.monotonic() - begun
    batcher.stop(10)
    assert 0.25 <= waited < 1.5


def test_cancelled_requests_are_dropped_before_computing(recording, clf):
    batcher = started(recording, max_wait_s=0.3)
    kept = batcher.submit(clf.encode(["很好"]))
    dropped = batcher.submit(clf.encode(["很差", "一般"]))
    assert dropped.cancel()
    assert kept.result(10)[0].ok
    batcher.stop(10)
    assert recording.batches == [1]
    assert batcher.waiting_texts == 0


def test_a_failing_batch_fails_every_waiter_and_the_worker_lives_on(recording, clf):
    batcher = started(recording, max_wait_s=0.2)
    recording.fail_next = True
    futures = [batcher.submit(clf.encode([t])) for t in ("好", "坏", "一般")]
    for future in futures:
        with pytest.raises(BatchFailedError) as caught:
            future.result(10)
        assert isinstance(caught.value.__cause__, RuntimeError)
    assert batcher.submit(clf.encode(["好吃"])).result(10)[0].ok
    assert batcher.alive
    batcher.stop(10)


def test_full_queue_refuses_the_whole_request(recording, clf):
    recording.gate.clear()  # the worker holds its first batch: the queue fills up behind it
    batcher = started(recording, max_queue=3, max_wait_s=0.0)
    first = batcher.submit(clf.encode(["一"]))
    deadline = time.monotonic() + 5
    while batcher.waiting_texts and time.monotonic() < deadline:
        time.sleep(0.01)  # the first request leaves the queue once its batch runs
    queued = batcher.submit(clf.encode(["二", "三"]))
    with pytest.raises(OverloadedError, match="max_queue"):
        batcher.submit(clf.encode(["四", "五"]))
    assert batcher.waiting_texts == 2
    recording.gate.set()
    assert first.result(10)[0].ok and all(r.ok for r in queued.result(10))
    batcher.stop(10)


def test_cancelled_queued_requests_free_their_room_at_once(recording, clf):
    """Clients that went away must not hold the queue full while the worker is busy elsewhere."""
    recording.gate.clear()  # the worker holds its first batch: later requests stay queued
    batcher = started(recording, max_queue=4, max_wait_s=0.0)
    first = batcher.submit(clf.encode(["一"]))
    deadline = time.monotonic() + 5
    while batcher.waiting_texts and time.monotonic() < deadline:
        time.sleep(0.01)
    kept = batcher.submit(clf.encode(["好吃"]))
    gone = batcher.submit(clf.encode(["很差", "一般", "还行"]))
    with pytest.raises(OverloadedError):
        batcher.submit(clf.encode(["难吃"]))
    assert gone.cancel()
    assert batcher.waiting_texts == 1  # before the worker comes back to the queue
    late = batcher.submit(clf.encode(["难吃", "不错", "很好"]))
    recording.gate.set()
    assert first.result(10)[0].ok
    assert [r.label for r in kept.result(10) + late.result(10)] == [r.label for r in clf(["好吃", "难吃", "不错", "很好"])]
    batcher.stop(10)
    assert recording.batches == [1, 4]  # the cancelled texts were never computed
    assert batcher.waiting_texts == 0


def test_a_request_cancelled_while_its_batch_waits_for_more_frees_its_room_at_once(recording, clf):
    """With a merge window, the worker holds the first request while it waits for more: a client
    that leaves meanwhile must not hold the queue full (429 for live clients) for the rest of it."""
    batcher = started(recording, max_queue=4, max_wait_s=30.0)
    gone = batcher.submit(clf.encode(["很差", "一般", "还行"]))
    deadline = time.monotonic() + 5
    while batcher._small:
        assert time.monotonic() < deadline, "the worker never gathered the request"
        time.sleep(0.01)  # the worker took it and now waits out max_wait_s for more
    assert gone.cancel()
    assert batcher.waiting_texts == 0
    kept = batcher.submit(clf.encode(["好吃", "难吃", "不错", "很好"]))  # the whole room again: no 429
    assert batcher.stop(10)  # stopping ends the wait at once
    assert [r.label for r in kept.result(10)] == [r.label for r in clf(["好吃", "难吃", "不错", "很好"])]
    assert recording.batches == [4]  # the cancelled texts were never computed
    assert batcher.waiting_texts == 0


def test_flagged_texts_only_never_reach_the_model(recording, clf):
    batcher = started(recording)
    results = batcher.submit(clf.encode(["", "   "])).result(10)
    batcher.stop(10)
    assert [r.error for r in results] == ["empty text", "empty text"]
    assert recording.batches == []


def test_stop_finishes_queued_work_then_refuses(recording, clf):
    batcher = started(recording, max_wait_s=5.0)
    future = batcher.submit(clf.encode(["挺好"]))
    assert batcher.stop(10)  # does not wait out max_wait when stopping
    assert future.result(0)[0].ok
    with pytest.raises(WorkerStoppedError):
        batcher.submit(clf.encode(["还行"]))


def test_stop_abandoning_the_work_ends_it_at_the_next_model_call(clf):
    """Past the server's graceful shutdown no client waits, but the worker computed every batch in
    hand before the process could exit (17 s past a 1 s --graceful-timeout). Abandoned, the work in
    hand ends at its next model call and the queued work is not computed."""
    from structsent.engine import Classifier

    one_text_a_call = Classifier(clf.checkpoint, clf.runner, clf.plan.replace(max_batch_size=1))
    calls = []
    running = threading.Event()

    class Counted:
        token_budget, max_batch_size = one_text_a_call.token_budget, 1

        def label_encoded(self, encoded, *, abandon=None, **options):
            def counted_abandon():
                calls.append(1)
                running.set()
                time.sleep(0.01)  # one model call of a slower model
                return abandon()
            return one_text_a_call.label_encoded(encoded, abandon=counted_abandon, **options)

    batcher = started(Counted(), max_wait_s=0.0, max_queue=10_000)
    texts = [f"第{i}条评论，味道很好" for i in range(2000)]
    in_hand = batcher.submit(clf.encode(texts[:1000]))
    queued = batcher.submit(clf.encode(texts[1000:]))
    assert running.wait(10)
    began = time.monotonic()
    assert batcher.stop(30, abandon=True)
    assert time.monotonic() - began < 2.0  # (computing the rest: about 2,000 calls of 10 ms)
    for future in (in_hand, queued):
        with pytest.raises(WorkerStoppedError, match="stopped before this request was computed"):
            future.result(0)
    assert len(calls) < 500


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dying_worker_fails_waiters_and_reports_itself(recording, clf, workers):
    batcher = started(recording, max_wait_s=0.2, workers=workers)

    def broken_take(batch):
        raise AssertionError("bug in the loop")

    batcher._take_fitting = broken_take
    future = batcher.submit(clf.encode(["好"]))
    with pytest.raises(WorkerStoppedError, match="died"):
        future.result(10)
    assert not batcher.alive
    assert batcher.stop(5)  # the other workers end too: none waits for work that will never come
    assert isinstance(batcher.failure, AssertionError)


@pytest.mark.parametrize("workers", [1, 2])
def test_futures_resolve_from_many_threads(recording, clf, real_reviews, workers):
    batcher = started(recording, max_wait_s=0.01, workers=workers)
    texts = real_reviews[:40]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: batcher.submit(clf.encode([t])).result(20)[0], texts))
    batcher.stop(10)
    expected = clf(texts)
    assert [r.label for r in results] == [r.label for r in expected]
    assert sum(recording.batches) == 40


class MeetingClassifier(RecordingClassifier):
    """Each model call waits (up to 5 s) until ``meet`` calls are running at once."""

    def __init__(self, classifier, meet: int) -> None:
        super().__init__(classifier)
        self.barrier = threading.Barrier(meet, timeout=5)
        self.running = 0
        self.most_at_once = 0
        self.called = threading.Event()
        self._lock = threading.Lock()

    def label_encoded(self, encoded, *, abandon=None, **options):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.called.set()
        try:
            self.barrier.wait()
            return super().label_encoded(encoded, abandon=abandon, **options)
        finally:
            with self._lock:
                self.running -= 1


def test_two_workers_compute_two_batches_at_once(clf, real_reviews):
    """While one batch computes, the second worker takes the next one (with one worker the two
    calls could never meet: the barrier breaks and both batches fail)."""
    meeting = MeetingClassifier(clf, meet=2)
    batcher = started(meeting, max_wait_s=0.0, workers=2)
    first = batcher.submit(clf.encode(real_reviews[:3]))
    assert meeting.called.wait(10)  # (else both requests could be gathered into one batch)
    second = batcher.submit(clf.encode(real_reviews[3:5]))
    results = first.result(10) + second.result(10)
    assert batcher.stop(10)
    assert meeting.most_at_once == 2
    assert sorted(meeting.batches) == [2, 3]
    alone = clf(real_reviews[:5])
    assert [r.label for r in results] == [r.label for r in alone]
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-5)


def test_one_worker_never_runs_two_calls_at_once(clf):
    meeting = MeetingClassifier(clf, meet=2)
    batcher = started(meeting, max_wait_s=0.0, workers=1)
    first = batcher.submit(clf.encode(["好吃"]))
    assert meeting.called.wait(10)
    second = batcher.submit(clf.encode(["难吃"]))
    for future in (first, second):
        with pytest.raises(BatchFailedError):  # the barrier broke: no second call came
            future.result(20)
    assert batcher.stop(10)
    assert meeting.most_at_once == 1


def test_two_workers_lose_no_request_and_mix_no_results(clf, real_reviews):
    """Many clients, two workers: every request gets its own texts' results, in its order."""
    recording = RecordingClassifier(clf)
    batcher = started(recording, max_wait_s=0.0, workers=2, max_queue=4096)
    requests = [real_reviews[i : i + 1 + i % 4] for i in range(0, 200)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda texts: batcher.submit(clf.encode(texts)).result(30), requests))
    assert batcher.stop(10)
    expected = {text: result for text, result in zip(real_reviews[:203], clf(real_reviews[:203]))}
    assert [len(a) for a in answers] == [len(r) for r in requests]
    for texts, answer in zip(requests, answers):
        assert [r.label for r in answer] == [expected[t].label for t in texts]
        assert [r.score for r in answer] == pytest.approx([expected[t].score for t in texts], abs=1e-5)
    assert sum(recording.batches) == sum(len(r) for r in requests)


def test_stop_with_two_workers_finishes_the_queue_and_ends_both(recording, clf):
    recording.gate.clear()  # both workers hold a batch; more queue behind them
    batcher = started(recording, max_wait_s=0.0, workers=2, max_batch_size=1)
    futures = [batcher.submit(clf.encode([f"第{i}条，还不错"])) for i in range(6)]
    stopping = threading.Thread(target=batcher.stop, args=(10,))
    stopping.start()
    recording.gate.set()
    stopping.join(15)
    assert not stopping.is_alive() and not batcher.alive
    assert all(f.result(0)[0].ok for f in futures)
    assert sorted(recording.batches) == [1] * 6


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_workers_must_be_a_positive_int(clf, workers):
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(clf, max_wait_s=0.0, max_queue=1, workers=workers)


def test_a_lone_large_request_runs_on_every_lane(clf, real_reviews):
    """With two workers each model call has half the cores: a lone request of many model calls
    ran them all on one half (twice as long); now its calls spread over both lanes."""
    from structsent.engine import Classifier

    from ..test_engine import MeetingRunner

    runner = MeetingRunner(clf.runner)
    engine = Classifier(clf.checkpoint, runner, clf.plan.replace(max_batch_size=4))
    batcher = started(engine, max_wait_s=0.0, workers=2)
    texts = real_reviews[:40]
    results = batcher.submit(engine.encode(texts)).result(30)
    assert batcher.stop(10)
    assert runner.most_at_once == 2 and runner.calls >= 10
    alone = clf(texts)
    assert [r.label for r in results] == [r.label for r in alone]
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_whose_every_client_left_stops_at_its_next_model_call(clf, workers):
    """A request's client that leaves once its batch runs cannot take it back; when every request
    of the batch is gone, the batch stops at its next model call and the next request is served
    (two 30-text requests of clients that had left were computed in full, 80 s, before it)."""
    from structsent.engine import Classifier
    from structsent.server.metrics import ServerMetrics

    from .conftest import metric, parse_metrics

    runner = SlowRunner(clf.runner)
    engine = Classifier(clf.checkpoint, runner, clf.plan.replace(max_batch_size=1))
    metrics = ServerMetrics(queue_depth=lambda: 0)
    # The batcher takes the request as one part (one batch); the engine cuts it into 1,000 model calls.
    batcher = started(engine, max_wait_s=0.0, workers=workers, max_queue=10_000, max_batch_size=10_000,
                      token_budget=10**6, on_batch=metrics.observe_batch)
    left = batcher.submit(engine.encode([f"第{i}条评论，味道很好" for i in range(1000)]))
    deadline = time.monotonic() + 10
    while runner.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.calls > 0
    assert not left.cancel()  # running: cannot be taken back, but is withdrawn
    began = time.monotonic()
    assert batcher.submit(engine.encode(["还不错"])).result(30)[0].ok
    assert time.monotonic() - began < 3.0  # (the rest of the left batch: ~1,000 calls of 10 ms)
    assert batcher.stop(10)
    assert runner.calls < 500
    with pytest.raises(WorkAbandonedError, match="client left before its request was computed"):
        left.result(0)
    samples = parse_metrics(metrics.render().decode())
    # The stopped batch is counted as such (it was in no figure), not as a failure nor in the batch sizes.
    assert metric(samples, "structsent_abandoned_batches_total") == 1
    assert metric(samples, "structsent_failed_batches_total") == 0


class LengthRecorder(RecordingClassifier):
    """Records the first sequence length of every text of each call (tests give each request
    texts of its own length, so a call's lengths say whose texts it held)."""

    def __init__(self, classifier) -> None:
        super().__init__(classifier)
        self.calls: list[list[int]] = []

    def label_encoded(self, encoded, *, abandon=None, **options):
        self.gate.wait(10)
        self.calls.append([len(e.sequences[0]) for e in encoded if e.sequences])
        return super().label_encoded(encoded, abandon=abandon, **options)


def test_a_small_request_waits_for_one_part_of_a_large_one_and_large_ones_finish_in_turn(clf):
    """Two 40-text requests queued ahead of a 1-text one: it ran after all 80 texts (a client
    waited 10-12 s behind three 400-review requests). Now batches alternate between small requests
    and the oldest large one's next part; large requests still finish one after the other (taking
    turns part by part, they all finished at the end, and a graceful shutdown cut every one)."""
    recording = LengthRecorder(clf)
    recording.gate.clear()  # the worker holds the first batch while the others queue
    batcher = started(recording, max_wait_s=0.0, token_budget=8 * 12, max_queue=1000)
    first = batcher.submit(clf.encode(["好" * 10] * 40))  # 12 tokens a text: parts of 8 texts
    wait_for(lambda: batcher.waiting_texts == 32)  # its first part is taken (and held at the gate)
    second = batcher.submit(clf.encode(["差" * 11] * 40))  # 13 tokens: parts of 7 texts
    small = batcher.submit(clf.encode(["一般"]))  # 4 tokens
    recording.gate.set()
    assert small.result(10)[0].ok
    assert [r.label for r in first.result(10)] == [clf(["好" * 10])[0].label] * 40
    assert len(second.result(10)) == 40
    assert batcher.stop(10)
    owners = [sorted({12: "first", 13: "second", 4: "small"}[n] for n in set(call)) for call in recording.calls]
    # The first's part in hand, its next (a large request's turn), the small one, then the first's
    # three other parts and the second's six (40 = 5 x 8 = 5 x 7 + 5), one request after the other.
    assert owners == [["first"]] * 2 + [["small"]] + [["first"]] * 3 + [["second"]] * 6
    assert [len(call) for call in recording.calls] == [8] * 2 + [1] + [8] * 3 + [7] * 5 + [5]


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_cut_into_parts_keeps_its_order_and_equals_the_library(clf, real_reviews, workers):
    recording = LengthRecorder(clf)
    batcher = started(recording, max_wait_s=0.0, workers=workers, token_budget=256, max_batch_size=8,
                      max_queue=1000)
    texts = real_reviews[:150]
    results = batcher.submit(clf.encode(texts)).result(60)
    assert batcher.stop(10)
    assert len(recording.calls) > 150 / 8
    assert all(len(call) <= 8 and sum(call) <= 256 or len(call) == 1 for call in recording.calls)
    alone = clf(texts)
    assert [r.label for r in results] == [r.label for r in alone]
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-5)


def test_a_text_over_the_budget_is_a_part_of_its_own_and_long_texts_keep_their_windows(hf_model_dir):
    import structsent

    windowed = structsent.load(hf_model_dir, device="cpu", long_text="windows")
    recording = LengthRecorder(windowed)
    batcher = started(recording, max_wait_s=0.0, token_budget=64, max_queue=1000)
    texts = ["很好" * 300, "还行", "太差了" * 100, "一般般"]
    results = batcher.submit(windowed.encode(texts)).result(60)
    assert batcher.stop(10)
    alone = windowed(texts)
    assert [r.windows for r in results] == [r.windows for r in alone] and results[0].windows > 1
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-5)
    assert [r.label for r in results] == [r.label for r in alone]


def test_a_failing_part_fails_its_request_once_and_its_other_parts_are_not_computed(clf):
    recording = LengthRecorder(clf)
    recording.gate.clear()
    batcher = started(recording, max_wait_s=0.0, token_budget=8 * 12, max_queue=1000)
    doomed = batcher.submit(clf.encode(["好" * 10] * 40))
    wait_for(lambda: batcher.waiting_texts == 32)  # its first part is taken (and held at the gate)
    recording.fail_next = True  # the first part, held at the gate, raises
    recording.gate.set()
    with pytest.raises(BatchFailedError):
        doomed.result(10)
    assert batcher.submit(clf.encode(["好吃"])).result(10)[0].ok
    assert batcher.stop(10)
    assert len(recording.calls) == 2  # the failed part and the next request: none of the four other parts
    assert batcher.waiting_texts == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_running_request_whose_client_leaves_frees_its_queued_parts_at_once(clf, workers):
    recording = LengthRecorder(clf)
    recording.gate.clear()
    batcher = started(recording, max_wait_s=0.0, token_budget=8 * 12, max_queue=40, workers=workers)
    left = batcher.submit(clf.encode(["好" * 10] * 40))
    wait_for(lambda: batcher.waiting_texts == 40 - 8 * workers)  # a part taken by each worker, held at the gate
    with pytest.raises(OverloadedError):
        batcher.submit(clf.encode(["还行"] * 20))
    assert not left.cancel()  # running: withdrawn, not cancelled
    assert batcher.waiting_texts == 0  # its queued parts left the queue with it
    kept = batcher.submit(clf.encode(["还行"] * 20))
    recording.gate.set()
    assert all(r.ok for r in kept.result(10))
    assert batcher.stop(10)
    with pytest.raises(WorkAbandonedError):
        left.result(0)
    assert sum(len(call) for call in recording.calls) <= 20 + 2 * 8  # at most the parts already running


def test_large_requests_finish_one_after_another_and_small_ones_never_hold_a_large_one_back(clf):
    recording = LengthRecorder(clf)
    recording.gate.clear()
    batcher = started(recording, max_wait_s=0.0, token_budget=8 * 12, max_queue=1000)
    large = [batcher.submit(clf.encode(["好" * 10] * 40))]  # 12 tokens a text: five parts of 8
    wait_for(lambda: batcher.waiting_texts == 32)
    large.append(batcher.submit(clf.encode(["差" * 12] * 16)))  # 14 tokens: parts of 6, 6, 4
    full = [batcher.submit(clf.encode(["一般" * 4] * 9)) for _ in range(4)]  # 10 tokens: 90, one batch each
    recording.gate.set()
    assert all(len(f.result(10)) == 9 for f in full) and [len(f.result(10)) for f in large] == [40, 16]
    assert batcher.stop(10)
    owners = ["".join(sorted({12: "L", 14: "M", 10: "s"}[n] for n in set(call))) for call in recording.calls]
    # The large ones in arrival order, every other batch theirs while small ones wait.
    assert "".join(owners) == "LLsLsLsLsMMM"


def test_a_part_still_running_when_another_part_of_its_request_fails_stops_at_its_next_model_call(clf):
    """Two workers run two parts of one request; the first fails: the other was computed to its end."""
    from structsent.engine import Classifier

    runner = SlowRunner(clf.runner)
    engine = Classifier(clf.checkpoint, runner, clf.plan.replace(max_batch_size=1))  # a model call a text

    class FailsFirst:
        token_budget, max_batch_size = engine.token_budget, engine.max_batch_size
        failed = False

        def label_encoded(self, encoded, **options):
            if not FailsFirst.failed:
                FailsFirst.failed = True
                deadline = time.monotonic() + 20
                while runner.calls < 10 and time.monotonic() < deadline:
                    time.sleep(0.001)  # the other worker's part is running meanwhile
                raise RuntimeError("boom")
            return engine.label_encoded(encoded, **options)

    # 200 texts of 12 tokens, parts of 100: one for each worker.
    batcher = started(FailsFirst(), max_wait_s=0.0, workers=2, token_budget=100 * 12, max_batch_size=10_000,
                      max_queue=1000)
    doomed = batcher.submit(engine.encode(["好" * 10] * 200))
    with pytest.raises(BatchFailedError):
        doomed.result(30)
    assert batcher.submit(engine.encode(["还行"])).result(30)[0].ok
    assert batcher.stop(10)
    # 10 calls before the failure, then the ones already begun in each lane (and the one of "还行"):
    # far from the whole part's 100, on a fast host or a slow one.
    assert 10 <= runner.calls < 30


def test_taking_requests_out_of_the_queue_never_formats_them(clf, monkeypatch):
    """deque.remove names an item it does not hold by its repr, and a request's repr formatted all
    its token ids: ~0.1 s for 240 long texts, under the batcher's lock on the event loop, each time
    a client left a request that was running or queued with the large ones (a graceful shutdown
    that cut six such requests sent their 503s one every 0.14 s)."""
    from structsent.server import batcher as module

    def formatted(self):
        raise AssertionError("a batcher record was formatted")

    monkeypatch.setattr(module._Request, "__repr__", formatted)
    monkeypatch.setattr(module._Part, "__repr__", formatted)
    recording = LengthRecorder(clf)
    recording.gate.clear()
    batcher = started(recording, max_wait_s=0.0, token_budget=8 * 12, max_queue=80)
    running = batcher.submit(clf.encode(["好" * 10] * 40))  # cut into parts: queued with the large ones
    wait_for(lambda: batcher.waiting_texts == 32)  # one part taken, held at the gate
    queued = batcher.submit(clf.encode(["好" * 10] * 20))
    assert not running.cancel()  # running: withdrawn, looked for among the small ones first
    assert queued.cancel()  # queued with the large ones: looked for among the small ones first
    assert batcher.waiting_texts == 0
    kept = batcher.submit(clf.encode(["还行"] * 3))
    recording.gate.set()
    assert [r.ok for r in kept.result(10)] == [True] * 3
    assert batcher.stop(10)

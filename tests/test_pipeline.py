import gc
import threading
import time

import pytest

from structsent.pipeline import BackgroundWorker, Lanes, Prefetch, freeze_startup_objects


def test_prefetch_yields_every_item_in_order():
    with Prefetch(iter(range(1000)), depth=3) as items:
        assert list(items) == list(range(1000))


def test_prefetch_runs_ahead_in_another_thread():
    produced = []

    def source():
        for i in range(5):
            produced.append(threading.current_thread().name)
            yield i

    with Prefetch(source(), depth=2, name="reader") as items:
        first = next(iter(items))
        time.sleep(0.2)
        assert first == 0 and len(produced) >= 2  # it read ahead while we held item 0
    assert set(produced) == {"reader"}


def test_prefetch_reraises_the_producer_error_with_its_cause():
    def source():
        yield 1
        try:
            raise KeyError("inner")
        except KeyError as err:
            raise ValueError("bad row") from err

    with Prefetch(source()) as items:
        got = []
        with pytest.raises(ValueError, match="bad row") as info:
            for item in items:
                got.append(item)
    assert got == [1] and isinstance(info.value.__cause__, KeyError)


def test_prefetch_closed_early_does_not_hang():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    started = time.perf_counter()
    prefetch = Prefetch(endless(), depth=2)
    with prefetch as items:
        for item in items:
            if item == 3:
                break
    assert time.perf_counter() - started < 3
    assert not prefetch._thread.is_alive()


def test_background_worker_keeps_order_and_finishes_everything():
    done = []
    worker = BackgroundWorker(done.append, depth=2)
    for i in range(500):
        worker.submit(i)
    worker.close()
    assert done == list(range(500))


def test_background_worker_failure_reaches_the_caller_and_stops_work():
    done = []

    def work(item):
        if item == 3:
            raise OSError("disk full")
        done.append(item)

    worker = BackgroundWorker(work, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            worker.submit(i)
        worker.close()
    assert done == [0, 1, 2]


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _tracked(obj) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_freezing_takes_live_objects_out_of_collections_and_later_cycles_are_still_collected():
    loaded = [Node() for _ in range(3)]
    assert _tracked(loaded)
    frozen = freeze_startup_objects()
    # (Not equal: an object frozen here may be freed at once by another thread of the test process.)
    assert frozen >= len(loaded) and 0 < gc.get_freeze_count() <= frozen
    assert not _tracked(loaded) and not _tracked(loaded[0])
    cycle = Node()
    cycle.other = Node()
    cycle.other.other = cycle
    assert _tracked(cycle)
    del cycle
    assert gc.collect() >= 2  # a cycle made after the freeze is reclaimed as before


# -- the GIL's hand-over on a GPU ---------------------------------------------------------------------
def test_quick_gil_handoff_lowers_the_switch_interval_on_a_gpu_only_and_restores_it():
    import sys

    from structsent.pipeline import DEVICE_SWITCH_INTERVAL, quick_gil_handoff

    lowered = pytest.approx(DEVICE_SWITCH_INTERVAL, rel=0.02)  # the interpreter keeps whole microseconds
    before = sys.getswitchinterval()
    with quick_gil_handoff("cpu"):
        assert sys.getswitchinterval() == before
    with quick_gil_handoff("cuda:0"):
        assert sys.getswitchinterval() == lowered
        with quick_gil_handoff("cuda"):  # overlapping users: the last one out restores
            assert sys.getswitchinterval() == lowered
        assert sys.getswitchinterval() == lowered
    assert sys.getswitchinterval() == before
    sys.setswitchinterval(DEVICE_SWITCH_INTERVAL / 5)  # a lower interval set by the user is kept
    try:
        with quick_gil_handoff("cuda:0"):
            assert sys.getswitchinterval() == pytest.approx(DEVICE_SWITCH_INTERVAL / 5, rel=0.05)  # microseconds
    finally:
        sys.setswitchinterval(before)


def test_a_label_job_on_a_gpu_runs_with_the_quick_handoff_and_gives_it_back(tmp_path):
    """A runner that says it is on CUDA (a stand-in: no GPU here) sees the lowered interval in
    every batch of a real label job; afterwards the interpreter's is restored."""
    import sys

    import numpy as np

    from structsent.config import EngineConfig
    from structsent.engine import Classifier
    from structsent.io.formats import Format
    from structsent.jobs.label import LabelJob, LabelJobSpec
    from structsent.models import load_checkpoint
    from structsent.pipeline import DEVICE_SWITCH_INTERVAL
    from structsent.runtime import resolve_runtime

    class GpuStandIn:
        name, device, precision = "stand-in", "cuda:0", "fp16"
        seen: list = []

        def run(self, input_ids, attention_mask):
            self.seen.append(sys.getswitchinterval())
            return np.tile(np.array([[0.2, -0.2]], dtype=np.float32), (len(input_ids), 1))

    checkpoint = load_checkpoint("default")
    runner = GpuStandIn()
    clf = Classifier(checkpoint, runner, resolve_runtime(checkpoint, EngineConfig(backend="torch", device="cpu")))
    source = tmp_path / "in.txt"
    source.write_text("".join(f"第{i}条评论，还不错\n" for i in range(300)), encoding="utf-8")
    before = sys.getswitchinterval()
    spec = LabelJobSpec(input=str(source), output=str(tmp_path / "out.csv"), input_format=Format.TXT,
                        output_format=Format.CSV, chunk_rows=64)
    summary = LabelJob(spec, clf).run()
    assert summary.rows == 300 and runner.seen
    assert all(seen == pytest.approx(DEVICE_SWITCH_INTERVAL, rel=0.02) for seen in runner.seen)
    assert sys.getswitchinterval() == before
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 301 and lines[1].startswith("第0条评论") and lines[-1].startswith("第299条评论")


def test_a_server_stopped_while_its_model_loads_leaves_the_switch_interval_as_it_was():
    """The server is told to stop (SIGTERM, the app's lifespan ends) while its model is still
    loading on a GPU: the load thread must not lower the interval after the stop, for good."""
    pytest.importorskip("fastapi")
    import sys

    import numpy as np

    from structsent.config import EngineConfig
    from structsent.engine import Classifier
    from structsent.models import load_checkpoint
    from structsent.runtime import resolve_runtime
    from structsent.server.service import SentimentService
    from structsent.server.settings import ServerSettings

    class GpuStandIn:
        name, device, precision = "stand-in", "cuda:0", "fp16"

        def run(self, input_ids, attention_mask):
            return np.tile(np.array([[0.2, -0.2]], dtype=np.float32), (len(input_ids), 1))

    checkpoint = load_checkpoint("default")
    plan = resolve_runtime(checkpoint, EngineConfig(backend="torch", device="cpu"))
    loading = threading.Event()

    def slow_load(settings):
        loading.wait(30)
        return Classifier(checkpoint, GpuStandIn(), plan)

    frozen_before = gc.get_freeze_count()
    before = sys.getswitchinterval()
    service = SentimentService(ServerSettings(model="default"), load=slow_load)
    thread = service.start_loading()
    try:
        service.stop(timeout=5)
        loading.set()
        thread.join(timeout=60)
        assert sys.getswitchinterval() == before
    finally:
        service.stop(timeout=5)  # what the load left running, whatever it was
        sys.setswitchinterval(before)
        if not frozen_before:
            gc.unfreeze()  # the service froze this test process's objects; later tests expect none


# -- Lanes --------------------------------------------------------------------------------------
def test_lanes_run_every_task_and_resolve_each_future_with_its_own_result():
    lanes = Lanes(2)
    futures = [lanes.submit(lambda n: n * n, n) for n in range(200)]
    assert [f.result(10) for f in futures] == [n * n for n in range(200)]
    lanes.close(5)
    assert not any(t.is_alive() for t in lanes._threads)
    with pytest.raises(RuntimeError, match="closed"):
        lanes.submit(abs, -1)


def test_lanes_run_tasks_side_by_side():
    lanes = Lanes(2)
    meet = threading.Barrier(2, timeout=5)
    futures = [lanes.submit(meet.wait) for _ in range(2)]  # one lane alone would break the barrier
    assert sorted(f.result(10) for f in futures) == [0, 1]
    lanes.close(5)


def test_lanes_take_their_callers_tasks_in_turn():
    """One caller's many tasks do not hold back another caller's one behind them."""
    lanes = Lanes(1)
    order: list[str] = []
    gate = threading.Event()
    first = lanes.submit(gate.wait, 5)  # the lane is busy while both callers submit
    many = [lanes.submit(order.append, f"many-{n}") for n in range(10)]
    submitted = threading.Event()
    ones: list = []

    def another_caller():
        ones.append(lanes.submit(order.append, "one"))
        submitted.set()

    other = threading.Thread(target=another_caller)
    other.start()
    assert submitted.wait(10)
    gate.set()
    other.join(10)
    assert ones[0].result(10) is None
    assert first.result(10) is True and all(f.result(10) is None for f in many)
    assert order.index("one") <= 1, order  # its turn came right after the first of the ten
    assert [x for x in order if x.startswith("many")] == [f"many-{n}" for n in range(10)]  # each caller's in order
    lanes.close(5)


def test_a_failing_task_fails_its_future_only_and_cancelled_tasks_never_run():
    lanes = Lanes(1)
    gate = threading.Event()
    ran: list[int] = []
    held = lanes.submit(gate.wait, 5)
    failing = lanes.submit(int, "x")
    cancelled = lanes.submit(ran.append, 1)
    kept = lanes.submit(ran.append, 2)
    assert cancelled.cancel()
    gate.set()
    assert held.result(10) is True
    with pytest.raises(ValueError):
        failing.result(10)
    assert kept.result(10) is None and ran == [2]
    lanes.close(5)


@pytest.mark.parametrize("count", [0, -1, True, 1.5])
def test_lanes_count_must_be_a_positive_int(count):
    with pytest.raises(ValueError, match="count"):
        Lanes(count)


def test_lanes_closed_from_one_of_their_own_tasks_end_without_error():
    lanes = Lanes(2)
    assert lanes.submit(lambda: lanes.close(5)).result(10) is None  # it raised "cannot join current thread"
    for thread in lanes._threads:
        thread.join(5)
    assert not any(t.is_alive() for t in lanes._threads)

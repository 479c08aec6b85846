import gc
import threading
import time

import pytest

from structsent.pipeline import BackgroundWorker, Prefetch, freeze_startup_objects


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
    assert frozen >= len(loaded) and gc.get_freeze_count() == frozen
    assert not _tracked(loaded) and not _tracked(loaded[0])
    cycle = Node()
    cycle.other = Node()
    cycle.other.other = cycle
    assert _tracked(cycle)
    del cycle
    assert gc.collect() >= 2  # a cycle made after the freeze is reclaimed as before

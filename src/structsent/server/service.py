"""The service behind the routes: the model loaded and warmed in the background, texts checked
against the limits, tokenized (small requests on the event loop, large ones in a thread) and
labelled through the MicroBatcher, and a client's leaving noticed so that its work is dropped."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import __version__
from ..config import LongTextPolicy
from ..errors import StructsentError
from ..lines import one_line
from ..pipeline import freeze_startup_objects, quick_gil_handoff_begin, quick_gil_handoff_end
from ..results import LabelResult
from .batcher import MicroBatcher, QueueFullError, WorkerStoppedError
from .direct import Receive
from .metrics import ServerMetrics
from .settings import ServerSettings, engine_config_for, model_workers_on
from .statuses import ClientDisconnectedError, LimitExceededError, ModelNotReadyError
from .tei import Truncation

if TYPE_CHECKING:
    from ..engine import Classifier

log = logging.getLogger("structsent.server")


WARMUP_TEXTS = ["这家店的菜味道很好，下次还会再来。", "质量太差了"]
INLINE_TOKENIZE_CHARS = 512  # a request this small, of known characters, is tokenized on the event loop
LEAVING_READ_S = 0.002  # after the tokenizer thread: time for the event loop to read a client's leaving


class LoadStopped(KeyboardInterrupt):
    """The server stopped while its model loaded: raised in the load thread (as Ctrl-C is in the
    main thread), so that the load's cleanups run (an ONNX export's staging directory is removed)."""


def load_classifier(settings: ServerSettings) -> Classifier:
    import structsent

    return structsent.load(settings.model, config=engine_config_for(settings))


class SentimentService:
    """Loads the model in the background, then labels texts through the MicroBatcher."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        load: Callable[[ServerSettings], Classifier] = load_classifier,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.classifier: Classifier | None = None
        self.batcher: MicroBatcher | None = None
        self._quick_handoff = False  # whether this service lowered the GIL's switch interval (GPU)
        self.load_error: BaseException | None = None
        self.stopping = False
        self._lifecycle = threading.Lock()  # going live and stopping, one at a time
        self.on_fatal = on_fatal
        self._load = load
        self._loading: threading.Thread | None = None
        self._load_over = False  # loaded, or failed: past where stop_loading may stop it
        self._tokenizer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="structsent-tokenize")
        self._texts_to_tokenize = 0  # texts of requests queued for, or in, the tokenizer thread
        self.metrics = ServerMetrics(queue_depth=lambda: self.batcher.waiting_texts if self.batcher else 0)

    # -- lifecycle ------------------------------------------------------------------------------
    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_and_warm, name="structsent-load", daemon=True)
        thread.start()
        self._loading = thread
        return thread

    def stop_loading(self, timeout: float) -> bool:
        """Stop the model's load if it still runs (the server stops before its model is ready):
        LoadStopped is raised in the load thread, which gets it at its next Python instruction,
        once the native call it is in (a tracing or fusion step, a batch) returns. True once no
        load runs; False if it still runs after ``timeout`` seconds.

        A process must not end while the load runs native code: the interpreter's finalisation
        then destroyed the libraries' running threads and aborted it (SIGABRT)."""
        thread = self._loading
        if thread is None or not thread.is_alive():
            return True
        with self._lifecycle:  # the load will not go live after this
            self.stopping = True
            if not self._load_over:
                raise_in_thread(thread, LoadStopped)
        thread.join(timeout)
        return not thread.is_alive()

    def _load_and_warm(self) -> None:
        try:
            self._load_warm_and_go_live()
            with self._lifecycle:
                self._load_over = True  # stop_loading raises nothing in this thread after this
        except LoadStopped:
            log.info("the model's load stopped: the server is shutting down")

    def _load_warm_and_go_live(self) -> None:
        try:
            classifier = self._load(self.settings)
            classifier.tokenizer.learn_vocabulary()  # characters met one request at a time cost more
            classifier(WARMUP_TEXTS)  # first calls are slow (allocations, kernels): not on a user
            batcher = MicroBatcher(
                classifier,
                max_wait_s=self.settings.max_wait_ms / 1000,
                max_queue=self.settings.max_queue,
                on_batch=self.metrics.observe_batch,
                workers=model_workers_on(self.settings, classifier.runner.device),
            )
            freeze_startup_objects()  # a full collection per few thousand requests walked the model each time
            described = classifier.info()  # before going live: a failure here leaves the service not ready
            if self._go_live(classifier, batcher):
                log.info("model ready: %s", one_line(str(described)))
        except LoadStopped:
            raise
        except BaseException as err:
            self.load_error = err
            # A typed error says what is wrong in its message; a traceback is for the unexpected.
            log.error("the model failed to load: %s", one_line(str(err)), exc_info=None if isinstance(err, StructsentError) else err)
            if self.on_fatal is not None:
                self.on_fatal()

    def _go_live(self, classifier: Classifier, batcher: MicroBatcher) -> bool:
        """Start serving with a loaded model, unless ``stop`` came first (then nothing is started)."""
        with self._lifecycle:
            if self.stopping:
                return False
            batcher.start()
            # On a GPU the model worker gets the GIL back from the event loop within 0.1 ms, not 5.
            self._quick_handoff = quick_gil_handoff_begin(classifier.runner.device)
            self.classifier, self.batcher = classifier, batcher
            return True

    def stop(self, timeout: float | None = None, *, abandon: bool = False) -> None:
        """Stop accepting work and finish what the batcher holds (with ``abandon``, once no client
        waits: stop computing at the next model call)."""
        with self._lifecycle:  # a model still loading will not go live after this
            self.stopping = True
            quick_handoff, self._quick_handoff = self._quick_handoff, False
        if self.batcher is not None and not self.batcher.stop(timeout, abandon=abandon):
            log.error("the model worker did not finish within %s s", timeout)
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        if quick_handoff:
            quick_gil_handoff_end()

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.batcher.alive and not self.stopping

    def require_ready(self) -> tuple[Classifier, MicroBatcher]:
        if self.stopping:
            raise ModelNotReadyError("the server is shutting down")
        if self.load_error is not None:
            raise ModelNotReadyError(f"the model failed to load: {self.load_error}")
        if self.batcher is None or self.classifier is None:  # both are set together
            raise ModelNotReadyError("the model is loading")
        if not self.batcher.alive:
            raise WorkerStoppedError("the model worker is not running") from self.batcher.failure
        return self.classifier, self.batcher

    # -- work -----------------------------------------------------------------------------------
    async def label(
        self, texts: list[str], receive: Receive | None = None, *, truncation: Truncation | None = None
    ) -> list[LabelResult]:
        """Label ``texts`` through the batcher; raises the typed errors the edge maps to statuses.
        ``receive`` is the request's: a client that disconnects while waiting has its texts dropped.
        ``truncation``: the request's own (TEI's ``truncate``), else the server's long-text policy."""
        classifier, batcher = self.require_ready()
        check_limits(texts, self.settings)
        # Cheap early refusal (submit() checks for real): texts still waiting for the tokenizer
        # thread count too, or a burst of large requests would queue there without bound.
        if not batcher.has_room(len(texts) + self._texts_to_tokenize):
            raise QueueFullError(
                f"queue full: {len(texts)} more texts would exceed max_queue={self.settings.max_queue}",
                limit_value=self.settings.max_queue,
            )
        with ClientWatch(receive) as client:
            encoded = await self._encode(classifier, texts, truncation, client)
            client.raise_if_gone()  # a batch that starts cannot be taken back: not for a client that left
            future = asyncio.wrap_future(batcher.submit(encoded))
            results = await client.unless_gone(future)
        self.metrics.observe_texts(len(results), sum(1 for r in results if r.error is not None))
        return results

    async def _encode(self, classifier: Classifier, texts: list[str], truncation: Truncation | None,
                      client: ClientWatch) -> list:
        """Small requests of characters met before are tokenized on the event loop: handing them to
        the tokenizer thread costs more CPU than tokenizing them (~0.2 ms a request, measured).
        Larger ones, and any holding a never-seen character (learning one costs ~0.1 ms: 2,000 of
        them held the loop for 0.1-0.2 s), go to the thread, so the loop keeps answering others.
        A client that leaves while its request waits for the thread has it dropped untokenized
        (large requests of clients that had left were tokenized one after the other, and live
        requests waited behind them). The tokenizer thread holds the interpreter most of the time:
        a client's leaving may be read only once it is done, so the loop is given a moment to
        read it before the texts go to the model."""
        options = classifier.encoding_options()
        if truncation is not None:
            policy = LongTextPolicy.TRUNCATE if truncation.cut else options.long_text
            options = dataclasses.replace(options, long_text=policy, keep_end=truncation.keep_end)
        if tokenize_on_the_loop(classifier, texts):
            return classifier.encode(texts, options)
        loop = asyncio.get_running_loop()
        self._texts_to_tokenize += len(texts)
        try:
            job = loop.run_in_executor(self._tokenizer_pool, classifier.encode, texts, options)
            encoded = await client.unless_gone(job)  # cancelled: taken off the thread's queue
        finally:
            self._texts_to_tokenize -= len(texts)
        await asyncio.sleep(LEAVING_READ_S)
        return encoded

    def info(self) -> dict:
        s = self.settings
        limits = {
            "max_body_bytes": s.max_body_bytes,
            "max_texts": s.max_texts,
            "max_text_chars": s.max_text_chars,
            "max_queue": s.max_queue,
            "max_wait_ms": s.max_wait_ms,
            "max_connections": s.max_connections,
            "read_timeout_s": s.read_timeout_s,
            "max_header_bytes": s.max_header_bytes,
            "max_batch_tokens": self.batcher.token_budget if self.batcher else s.engine.token_budget,
            "max_batch_size": self.batcher.max_batch_size if self.batcher else s.engine.max_batch_size,
            "model_workers": self.batcher.workers if self.batcher else s.model_workers,
        }
        info = {"version": __version__, "ready": self.ready, "model": s.model, "limits": limits}
        if self.classifier is not None:
            engine = self.classifier.info()
            # The engine's settings under their EngineConfig names (limits.max_batch_tokens is TEI's name
            # for token_budget, kept for TEI clients).
            info.update({k: v for k, v in engine.items() if k != "model"})
            info["model"] = engine["model"]
        return info


def raise_in_thread(thread: threading.Thread, exception: type[BaseException]) -> None:
    """Raise ``exception`` in ``thread`` at its next Python instruction (CPython's
    PyThreadState_SetAsyncExc: a thread in a native call gets it when the call returns)."""
    import ctypes

    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exception))


def check_text_count(count: int, settings: ServerSettings) -> None:
    if count > settings.max_texts:
        raise LimitExceededError(
            f"{count} texts in one request; the limit is max_texts={settings.max_texts}",
            limit="max_texts",
            limit_value=settings.max_texts,
        )


def tokenize_on_the_loop(classifier: Classifier, texts: list[str]) -> bool:
    """A request cheap and bounded to tokenize: few characters, none never seen before."""
    return sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS and classifier.tokenizer.knows_every_character(texts)


def check_limits(texts: list[str], settings: ServerSettings) -> None:
    check_text_count(len(texts), settings)
    for index, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise LimitExceededError(
                f"text {index} has {len(text)} characters; the limit is max_text_chars={settings.max_text_chars}",
                limit="max_text_chars",
                limit_value=settings.max_text_chars,
            )


class ClientWatch:
    """Whether the client of a request has left, from its ``receive`` (None: never known to leave).

    The client leaving cancels the future a request waits on (the tokenizer thread's job, the
    batcher's), which drops work not yet started. (A callback, not asyncio.wait: it costs the event
    loop less per request.)"""

    def __init__(self, receive: Receive | None) -> None:
        self._watcher = None if receive is None else asyncio.ensure_future(_wait_for_disconnect(receive))

    def __enter__(self) -> "ClientWatch":
        return self

    def __exit__(self, *exc) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    @property
    def gone(self) -> bool:
        return self._watcher is not None and self._watcher.done() and not self._watcher.cancelled()

    def raise_if_gone(self) -> None:
        if self.gone:
            raise ClientDisconnectedError("the client disconnected")

    async def unless_gone(self, future: asyncio.Future):
        """The future's result, unless the client leaves first: then the work is cancelled."""
        if self._watcher is None:
            return await future
        self.raise_if_gone()
        cancel = lambda _: future.cancel()  # noqa: E731
        self._watcher.add_done_callback(cancel)
        try:
            return await future
        except asyncio.CancelledError:
            if self.gone:
                raise ClientDisconnectedError("the client disconnected") from None
            raise
        finally:
            self._watcher.remove_done_callback(cancel)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

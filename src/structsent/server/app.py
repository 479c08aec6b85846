"""The HTTP app: routes, request limits, and typed errors turned into HTTP statuses.

The model is loaded and warmed in a background thread while the server already answers
``/health`` (503, then 200). Requests are tokenized (small ones on the event loop, large ones in
a thread), then handed to the MicroBatcher, which merges concurrent requests into token-budgeted
batches. Well-formed requests to the labelling routes are answered by ``DirectRoutes`` (direct.py)
without the framework's routing layers; every other request by the framework's routes.

>>> app = create_app(ServerSettings(model="default"))                     # doctest: +SKIP
>>> # uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Route

from .. import __version__
from ..config import EngineConfig, LongTextPolicy, check_integer
from ..errors import BadInputError, ConfigError, ModelOutputError, OverloadedError, StructsentError
from ..io.readers import DuplicateKeyError, NonFiniteNumberError
from ..lines import one_line
from ..pipeline import freeze_startup_objects, quick_gil_handoff_begin, quick_gil_handoff_end
from ..results import LabelResult, is_model_failure
from .apidocs import PATHS as API_DOCS_PATHS
from .apidocs import add_offline_docs
from .batcher import BatchFailedError, MicroBatcher, QueueFullError, WorkerStoppedError
from .direct import DirectRoute, DirectRoutes, Receive, json_body
from .metrics import ServerMetrics
from .middleware import (
    BODY_METHODS,
    BearerAuth,
    BodyLimits,
    CloseWhenDraining,
    ConnectionPolicy,
    RequestTimer,
    bounded,
    error_json,
    shown_header,
)
from .page import BrowserPage
from .schemas import (
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    PredictRequest,
    PredictResponse,
    SentimentRequest,
    SentimentResponse,
)

if TYPE_CHECKING:
    from ..engine import Classifier

log = logging.getLogger("structsent.server")

WARMUP_TEXTS = ["这家店的菜味道很好，下次还会再来。", "质量太差了"]
OPEN_PATHS = frozenset({"/health"})  # answered without the API key (probes carry none)
# With --api-key, the API's description is answered without the key too (it holds no data), so
# that a browser can load /docs, whose Authorize button then sends the key on every call it makes.
DOCUMENTATION_PATHS = API_DOCS_PATHS | {"/openapi.json"}
MAX_WAIT_MS_LIMIT = 60_000  # a merge window of a minute already delays every lone request by a minute
INLINE_TOKENIZE_CHARS = 512  # a request this small, of known characters, is tokenized on the event loop
LEAVING_READ_S = 0.002  # after the tokenizer thread: time for the event loop to read a client's leaving
MIN_HEADER_BYTES = 1024  # below, requests of probes and browsers would be refused (431) one and all
MAX_MODEL_WORKERS = 64  # model calls at once; more is a typo, not a machine


# -- settings and errors ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything the server needs besides host and port."""

    model: str = "default"
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_text_chars: int = 20_000
    max_queue: int = 4096
    max_wait_ms: float = 0.0
    max_connections: int = 256
    read_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    api_key: str | None = dataclasses.field(default=None, repr=False)  # never in /info nor a log
    page: bool = True  # GET / from a browser serves the page (page.py)
    # Model calls at once (the batcher's worker threads), the CPU cores divided among them unless
    # engine.num_threads is set. Two: +11% at 64 clients on 2 cores, a lone request a quarter slower (docs/SERVER.md).
    model_workers: int = 1

    def __post_init__(self) -> None:
        check_integer("model_workers", self.model_workers, 1, MAX_MODEL_WORKERS)
        if self.engine.device_kind == "cuda":
            check_one_model_worker_on_a_gpu(self.model_workers)
        for name in ("max_body_bytes", "max_texts", "max_text_chars", "max_queue", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.max_header_bytes < MIN_HEADER_BYTES:  # every request refused, /health's too: never ready
            raise ConfigError(f"max_header_bytes={self.max_header_bytes}: must be at least {MIN_HEADER_BYTES} (a "
                              "browser's request headers alone take several hundred bytes)")
        # NaN passes every comparison and infinity reaches timers and /info (not JSON): refuse both.
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= MAX_WAIT_MS_LIMIT):
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be a number of milliseconds in 0..{MAX_WAIT_MS_LIMIT}")
        if not (math.isfinite(self.read_timeout_s) and self.read_timeout_s > 0):
            raise ConfigError(f"read_timeout_s={self.read_timeout_s}: must be a finite number of seconds > 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty: give a key, or none for a server without authentication")
        if self.api_key is not None and not all("!" <= char <= "~" for char in self.api_key):
            raise ConfigError("the API key must be printable ASCII without spaces (clients and browsers send other "
                              "characters in other encodings, or not at all, so it could never match)")
        if self.max_texts > self.max_queue:
            raise ConfigError(
                f"max_texts={self.max_texts} > max_queue={self.max_queue}: a full request could never be queued"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerSettings":
        fields = json.loads(text)
        return cls(**{**fields, "engine": EngineConfig(**fields["engine"])})


class LimitExceededError(BadInputError):
    """A request is larger than a configured limit (HTTP 413); ``limit`` names it, as in /info."""

    def __init__(self, message: str, *, limit: str, limit_value: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.limit_value = limit_value


class LoadStopped(KeyboardInterrupt):
    """The server stopped while its model loaded: raised in the load thread (as Ctrl-C is in the
    main thread), so that the load's cleanups run (an ONNX export's staging directory is removed)."""


class ModelNotReadyError(StructsentError):
    """The model is still loading, failed to load, or the server is shutting down (HTTP 503)."""


class ClientDisconnectedError(StructsentError):
    """The client went away before its result was ready; its work was dropped."""


# Typed errors -> (HTTP status, error_type). Looked up along the error's MRO, most specific first.
ERROR_STATUSES: dict[type[BaseException], tuple[int, str]] = {
    LimitExceededError: (413, "validation"),
    BadInputError: (422, "validation"),
    OverloadedError: (429, "overloaded"),
    ModelNotReadyError: (503, "unhealthy"),
    WorkerStoppedError: (503, "unhealthy"),
    BatchFailedError: (500, "backend"),
    ModelOutputError: (500, "backend"),
}


def status_of(err: BaseException) -> tuple[int, str]:
    for kind in type(err).__mro__:
        if kind in ERROR_STATUSES:
            return ERROR_STATUSES[kind]
    return 500, "backend"


def error_type_of_status(status: int) -> str:
    """The error type of an HTTP error raised by the framework (unknown route, wrong method...)."""
    return {401: "unauthorized", 408: "timeout", 429: "overloaded", 503: "unhealthy"}.get(
        status, "validation" if status < 500 else "backend"
    )


# -- the service: model, batcher and metrics behind the routes --------------------------------
def load_classifier(settings: ServerSettings) -> Classifier:
    import structsent

    return structsent.load(settings.model, config=engine_config_for(settings))


def engine_config_for(settings: ServerSettings) -> EngineConfig:
    """The engine's settings, the CPU threads divided among the model workers unless
    ``num_threads`` is set (then each call has that many)."""
    from ..runtime import usable_cores

    if settings.model_workers == 1 or settings.engine.num_threads:
        return settings.engine
    return settings.engine.replace(num_threads=max(1, usable_cores() // settings.model_workers))


def model_workers_on(settings: ServerSettings, device: str) -> int:
    """The model workers for a model loaded on ``device``: more than one is refused on a GPU
    (``device`` 'auto' may find one after the settings were checked)."""
    if device.startswith("cuda"):
        check_one_model_worker_on_a_gpu(settings.model_workers)
    return settings.model_workers


def check_one_model_worker_on_a_gpu(model_workers: int) -> None:
    """A GPU takes one model call at a time: the calls would queue on the device anyway, and the
    runner's staging buffers for the copies to it serve one call."""
    if model_workers > 1:
        raise ConfigError(f"model_workers={model_workers}: on a GPU the model takes one call at a time (for more "
                          "throughput there, larger batches: --max-batch-size, --batch-tokens)")


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


def _check_text_count(count: int, settings: ServerSettings) -> None:
    if count > settings.max_texts:
        raise LimitExceededError(
            f"{count} texts in one request; the limit is max_texts={settings.max_texts}",
            limit="max_texts",
            limit_value=settings.max_texts,
        )


MAX_BODY_FIELDS = 32  # fields of a request's JSON object; the routes take at most five


TEXT_FIELDS = {"/v1/sentiment": "texts", "/predict": "inputs", "/": "inputs"}  # each route's list of texts


def check_request_json(value: Any, path: str, settings: ServerSettings) -> None:
    """Bounds checked on a request's JSON before the route's model validates it: validation makes
    one error per bad item, so a 1 MB list of 500,000 numbers (or an object of 90,000 unknown
    fields) held the event loop for seconds, every client and /health with it, and grew the
    process by half a GB. A list of texts over max_texts is the 413 it would get once valid."""
    if not isinstance(value, dict):
        return
    items = value.get(TEXT_FIELDS.get(path, ""))  # only the route's own: /predict ignores a "texts" field
    if isinstance(items, list):
        _check_text_count(len(items), settings)
    if len(value) > MAX_BODY_FIELDS:
        names = ", ".join(repr(name[:40]) for name in itertools.islice(value, 5))
        raise BadInputError(f"body: the object has {len(value):,} fields ({names}, ...); a request has at most "
                            f"{MAX_BODY_FIELDS}")


def tokenize_on_the_loop(classifier: Classifier, texts: list[str]) -> bool:
    """A request cheap and bounded to tokenize: few characters, none never seen before."""
    return sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS and classifier.tokenizer.knows_every_character(texts)


def check_limits(texts: list[str], settings: ServerSettings) -> None:
    _check_text_count(len(texts), settings)
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


# -- wire helpers -----------------------------------------------------------------------------
def result_json(result: LabelResult) -> dict:
    return {
        "label": result.label,
        "score": result.score,
        "scores": result.scores,
        "error": result.error,
        "truncated": result.truncated,
    }


def predict_texts(inputs) -> tuple[list[str], bool]:
    """TEI ``inputs`` (validated by PredictRequest) -> (texts, whether the request was a batch)."""
    if isinstance(inputs, str):
        return [inputs], False
    return [item if isinstance(item, str) else item[0] for item in inputs], True


@dataclasses.dataclass(frozen=True)
class Truncation:
    """A request's own say on long texts: cut them at the model's length (``cut``; else the
    server's ``--long-text`` policy), and keep their end rather than their start where cut."""

    cut: bool
    keep_end: bool


def requested_truncation(request: PredictRequest) -> Truncation | None:
    """TEI's ``truncate`` (true: cut; false: cut, then refuse what was cut; absent: the server's
    policy) and ``truncation_direction`` (Left keeps a text's end); None when the request says neither."""
    keep_end = request.truncation_direction.lower() == "left"
    if request.truncate is None and not keep_end:
        return None
    return Truncation(cut=request.truncate is not None, keep_end=keep_end)


def score_function(request: PredictRequest) -> str:
    """'softmax' (probabilities), 'none' (raw logits) or 'sigmoid' (of each logit), as TEI and the
    Hugging Face pipeline define them; ``raw_scores`` means 'none', and asked beside another
    function it is refused (422): which one was meant cannot be told (raw_scores won unsaid)."""
    requested = request.parameters.function_to_apply if request.parameters else None
    if request.raw_scores:
        if requested not in (None, "none"):
            raise BadInputError(f"raw_scores: true asks for the raw logits, parameters.function_to_apply "
                                f"'{requested}' for its scores: send one of the two")
        return "none"
    return requested or "softmax"


def ranked_predictions(result: LabelResult, *, function: str, top_k: int | None) -> list[dict]:
    """Label/score objects sorted by score, highest first (as TEI and HF clients expect)."""
    if function == "softmax":
        scores = result.scores
    elif function == "sigmoid":
        # 1 / (1 + e^-z), written so that no logit overflows math.exp
        scores = {label: 0.5 * (1.0 + math.tanh(z / 2.0)) for label, z in _logits(result).items()}
    else:
        scores = _logits(result)
    pairs = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
    return [{"label": label, "score": score} for label, score in pairs]


def _logits(result: LabelResult) -> dict[str, float]:
    assert result.logits is not None, "the engine keeps the logits of every labelled text"
    return result.logits


def check_predictable(results: list[LabelResult], *, truncate: bool | None, max_length: int) -> None:
    """TEI answers a whole request or refuses it: flagged or (unasked) truncated texts refuse it."""
    for index, result in enumerate(results):
        if is_model_failure(result.error):
            raise ModelOutputError(f"inputs[{index}]: {result.error}")
        if result.error is not None:
            raise BadInputError(f"inputs[{index}]: {result.error}")
        if result.truncated and truncate is False:
            raise LimitExceededError(
                f"inputs[{index}] is longer than the model's max_length ({max_length} tokens); "
                "send truncate=true to cut it",
                limit="max_length",
                limit_value=max_length,
            )


# -- the app ----------------------------------------------------------------------------------
def _error_response(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: _error_response("The server has an API key and the request lacks `Authorization: Bearer <key>`")
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    408: _error_response("The body did not arrive within `read_timeout_s` (`limit`, `limit_value`)"),
    413: _error_response("A request limit was exceeded (`limit` names it, `limit_value` is its value)"),
    415: _error_response("A Content-Encoding other than identity: send the body uncompressed"),
    422: _error_response("Malformed JSON (not UTF-8, nested too deeply...), wrong types, or unusable input"),
    429: _error_response("Queue full (`limit`: max_queue); retry after the Retry-After header"),
    500: _error_response("The model failed on this request's batch"),
    501: _error_response("A Transfer-Encoding other than chunked: send the body with chunked alone, or a Content-Length"),
    503: _error_response(
        "The model is loading or the server is shutting down; or too many open connections "
        "(`limit`: max_connections)"
    ),
}

DESCRIPTION = """Chinese sentiment labels with dynamic micro-batching.

`POST /v1/sentiment` is the native API; `POST /predict` (and `POST /`) speak Hugging Face
text-embeddings-inference's classification API, so TEI and `huggingface_hub` clients work unchanged.
Every error answer is an `ErrorResponse`. When the server runs with an API key, every route needs
the header `Authorization: Bearer <key>` but those that hold no data: `GET /health`, this description
(`/openapi.json`, `/docs` and its files) and the page a browser gets at `GET /`.
"""


def create_app(settings: ServerSettings, *, service: SentimentService | None = None,
               serve_once_loaded: bool = False) -> FastAPI:
    """The ASGI app; the model starts loading when the app starts (lifespan), and the app serves
    at once (503 while loading), or with ``serve_once_loaded`` (worker processes) only once the
    load has ended, loaded or failed.

    The lifespan state hands the connection limits to the HTTP protocol (``connections.py``).
    """
    service = service or SentimentService(settings)
    policy = ConnectionPolicy(
        max_connections=settings.max_connections,
        read_timeout_s=settings.read_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        on_refused=service.metrics.observe_refused_connection,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = service.start_loading()
        if serve_once_loaded:
            await asyncio.to_thread(loading.join)
        yield {ConnectionPolicy.STATE_KEY: policy}
        # The server's connections are closed (answered, or past --graceful-timeout): what the model
        # still computes is for no one. It finished every batch in hand first: 17 s past a 1 s timeout.
        await asyncio.to_thread(functools.partial(service.stop, 60.0, abandon=True))

    app = FastAPI(title="structsent", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # /docs from the package's own files: works offline
                  # A trailing slash is another path (404), not a redirect built from the client's Host header.
                  redirect_slashes=False,
                  **framework_telemetry(os.environ))
    app.router.route_class = JsonBodyRoute
    add_offline_docs(app)
    app.state.service = service
    app.state.check_request_json = functools.partial(check_request_json, settings=settings)
    _add_error_handlers(app, service)
    _add_routes(app, service)
    _answer_head_where_get(app)
    endpoints = {route.path for route in app.routes if isinstance(route, Route)}
    with_bodies = frozenset(route.path for route in app.routes
                            if isinstance(route, Route) and (route.methods or set()) & BODY_METHODS)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(
        DirectRoutes, routes=direct_routes(service), check_json=app.state.check_request_json,
        error_response=functools.partial(typed_error_response, metrics=service.metrics),
    )
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.read_timeout_s,
        on_reject=service.metrics.observe_error,
        paths=with_bodies,
    )
    if settings.api_key is not None:
        app.add_middleware(
            BearerAuth, api_key=settings.api_key, open_paths=OPEN_PATHS | DOCUMENTATION_PATHS,
            on_reject=service.metrics.observe_error,
        )
        _declare_bearer_auth(app)
    if settings.page:
        app.add_middleware(BrowserPage)  # outside BearerAuth: the page is where one types the key
    app.add_middleware(CloseWhenDraining, policy=policy)
    app.add_middleware(RequestTimer, metrics=service.metrics, endpoints=endpoints)
    return app


def framework_telemetry(environ: Mapping[str, str]) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry instrumentation, in the versions that have it, asks the global
    providers on every request whether it is on, reading the environment each time: ~10% of the
    event loop's time under load (measured, nothing configured). It is off unless the operator
    turns it on as FastAPI documents (``FASTAPI_OTEL_AUTO_CONFIGURE=true``); the server's own
    Prometheus metrics are always there."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _answer_head_where_get(app: FastAPI) -> None:
    """HEAD on every GET route (RFC 9110 asks it of general-purpose servers): load balancers and
    uptime checkers probe ``/health`` with it. The same endpoint answers; the HTTP protocol sends
    its headers without the body. The twins stay out of the OpenAPI document."""
    for route in list(app.routes):
        if isinstance(route, APIRoute) and route.methods == {"GET"}:
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)


def _with_head_allowed(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """A 405's Allow header names HEAD beside GET: every GET route answers HEAD too (its twin route
    is another route, which the framework's 405 does not list)."""
    if not headers or "allow" not in {name.lower() for name in headers}:
        return headers
    fixed = {}
    for name, value in headers.items():
        methods = [m.strip() for m in value.split(",")] if name.lower() == "allow" else []
        if "GET" in methods and "HEAD" not in methods:
            value = ", ".join([*methods, "HEAD"])
        fixed[name] = value
    return fixed


def _declare_bearer_auth(app: FastAPI) -> None:
    """Say in the OpenAPI document that every operation but /health needs ``Authorization: Bearer``."""
    describe = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = describe()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the server's --api-key"}}
            schema["security"] = [{"apiKey": []}]
            for path in OPEN_PATHS:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI, service: SentimentService) -> None:
    """Every error the app answers, whoever raises it, in the one ErrorResponse shape."""

    @app.exception_handler(StructsentError)
    async def typed_error(request: Request, err: StructsentError) -> Response:
        return typed_error_response(err, service.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> Response:
        service.metrics.observe_error("validation")
        message = describe_validation_errors(err.errors(), document=err.body)
        content_type = request.headers.get("content-type")
        if not declares_json(content_type):  # the body was never read as JSON: say so first
            message = (f"send the body as JSON with the header Content-Type: application/json "
                       f"(the request has {'Content-Type: ' + shown_header(content_type) if content_type else 'none'}); "
                       f"{message}")
        return error_json(message, "validation", status=422)

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, err: HTTPException) -> Response:
        if err.status_code == 400 and isinstance(err.__cause__, StructsentError):  # raised reading the body
            return typed_error_response(err.__cause__, service.metrics)
        if err.status_code == 400 and err.__cause__ is not None:
            # FastAPI could not decode the body (not UTF-8, nested too deeply, a huge number):
            # malformed JSON, answered as the JSON parser's own errors are.
            service.metrics.observe_error("validation")
            return error_json(f"malformed JSON: {describe_undecodable_body(err.__cause__)}", "validation", status=422)
        error_type = error_type_of_status(err.status_code)
        service.metrics.observe_error(error_type)
        # The path as sent: url.path put a slash before the asterisk of `OPTIONS *`.
        message = f"{err.detail}: {bounded(request.method)} {bounded(request.scope.get('path') or request.url.path)}"
        return error_json(message, error_type, status=err.status_code, headers=_with_head_allowed(err.headers))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception) -> Response:
        # The traceback is logged by the server (the framework re-raises after this answer).
        service.metrics.observe_error("backend")
        return error_json(f"internal error: {type(err).__name__}", "backend", status=500)


class JsonBodyRequest(Request):
    """A request whose JSON body is read as the direct routes read it (``direct.json_body``)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            value = json_body(await self.body())
            self.app.state.check_request_json(value, self.scope["path"])  # a StructsentError: answered by its status
            self._json = value
        return self._json


class JsonBodyRoute(APIRoute):
    """The framework's routes, reading JSON bodies with ``JsonBodyRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JsonBodyRequest(request.scope, request.receive))

        return handle


def typed_error_response(err: StructsentError, metrics: ServerMetrics) -> Response:
    """The answer to a typed error, wherever the route was answered (framework or direct)."""
    if isinstance(err, ClientDisconnectedError):
        return Response(status_code=499)  # nobody is listening; keeps the access log honest
    status, error_type = status_of(err)
    metrics.observe_error(error_type)
    return error_json(
        str(err), error_type, status=status,
        limit=getattr(err, "limit", None), limit_value=getattr(err, "limit_value", None),
    )


def declares_json(content_type: str | None) -> bool:
    """Whether the framework reads a body of this content type as JSON (application/json, +json)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def describe_undecodable_body(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not valid UTF-8"
    if isinstance(cause, DuplicateKeyError):
        return f"the key '{bounded(cause.key)}' appears more than once in one object: which value was meant cannot be told"
    if isinstance(cause, NonFiniteNumberError):
        return f"{cause.literal} is not a JSON number (JSON has no NaN or infinity)"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number has too many digits"
    return f"unreadable body ({type(cause).__name__})"


# pydantic error types whose message gains a hint, keyed by (form of `inputs`, type)
VALIDATION_HINTS: dict[tuple[str | None, str | None], str] = {
    ("batch", "too_long"): "sentence pairs are not supported by a single-text sentiment model; send [[text], [text], ...]",
    ("batch", "too_short"): "each inner list holds exactly one text",
}


def describe_validation_errors(errors, *, document: Any = None) -> str:
    """One readable line from pydantic's errors: where, and what was wrong. ``document`` is the
    body's text when it is not JSON (the framework keeps it): where the JSON error is."""
    parts = []
    for error in list(errors)[:5]:
        if error.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {describe_json_error(error, document)}")
            continue
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "string_unicode":  # a lone surrogate escape ("\ud800") where a str was wanted
            what = f"{'.'.join(bounded(part) for part in loc)}: holds" if loc else "body: a field name holds"
            parts.append(f"{what} a lone UTF-16 surrogate escape, which is not a character")
            continue
        where = ".".join(bounded(part) for part in loc) or "body"
        hint = VALIDATION_HINTS.get((loc[1] if len(loc) > 2 else None, error.get("type")))
        parts.append(f"{where}: {error.get('msg')}" + (f" ({hint})" if hint else ""))
    return "; ".join(parts) or "invalid request"


def describe_json_error(error: Mapping[str, Any], document: Any) -> str:
    """The JSON parser's message with its position, as json.JSONDecodeError words it ("Unterminated
    string starting at: line 1 column 11 (char 10)"): the framework keeps the message and the
    offset apart (ctx, loc), and the message alone ended on "starting at"."""
    message = error.get("ctx", {}).get("error", error.get("msg"))
    position = error.get("loc", ())[-1:]
    if isinstance(document, str) and position and isinstance(position[0], int) and 0 <= position[0] <= len(document):
        return str(json.JSONDecodeError(str(message), document, position[0]))
    return str(message)


async def answer_sentiment(service: SentimentService, body: SentimentRequest, receive: Receive) -> Response:
    results = await service.label(body.texts, receive)
    return JSONResponse({"results": [result_json(r) for r in results]})


async def answer_predict(service: SentimentService, body: PredictRequest, receive: Receive) -> Response:
    texts, batched = predict_texts(body.inputs)
    function = score_function(body)
    top_k = body.parameters.top_k if body.parameters else None
    results = await service.label(texts, receive, truncation=requested_truncation(body))
    assert service.classifier is not None  # label() answered: the model is loaded
    check_predictable(results, truncate=body.truncate, max_length=service.classifier.max_length)
    predictions = [ranked_predictions(r, function=function, top_k=top_k) for r in results]
    # A single text answers a flat list, as TEI does; Hugging Face Inference API clients (they
    # send `parameters`) expect one list per input even for a single text.
    nested = batched or body.parameters is not None
    return JSONResponse(predictions if nested else predictions[0])


def direct_routes(service: SentimentService) -> dict[str, DirectRoute]:
    """The labelling routes, for ``DirectRoutes``: the framework's routes call the same answers."""
    sentiment = DirectRoute(SentimentRequest, functools.partial(answer_sentiment, service))
    predict = DirectRoute(PredictRequest, functools.partial(answer_predict, service))
    return {"/v1/sentiment": sentiment, "/predict": predict, "/": predict}


def _add_routes(app: FastAPI, service: SentimentService) -> None:
    @app.post(
        "/v1/sentiment", operation_id="sentiment", response_model=SentimentResponse, responses=ERROR_RESPONSES,
        tags=["sentiment"],
    )
    async def sentiment(body: SentimentRequest, request: Request) -> Response:
        """Label texts; the i-th result belongs to the i-th text. Unusable texts (empty...) get
        `error` set instead of failing the request."""
        return await answer_sentiment(service, body, request.receive)

    async def predict(body: PredictRequest, request: Request) -> Response:
        return await answer_predict(service, body, request.receive)

    predict_doc: dict[str, Any] = dict(
        response_model=PredictResponse, responses=ERROR_RESPONSES, tags=["text-embeddings-inference"],
        summary="Classify texts (text-embeddings-inference API)",
        description="One text -> a list of {label, score} sorted by score; a batch -> one such list per "
        "text. With a `parameters` object (Hugging Face Inference API clients) a single text is "
        "answered as a batch of one.",
    )
    app.post("/predict", operation_id="predict", **predict_doc)(predict)
    app.post("/", operation_id="predict_root", **predict_doc)(predict)

    @app.get(
        "/health", operation_id="health", response_model=HealthResponse, responses={503: ERROR_RESPONSES[503]},
        tags=["service"],
    )
    async def health() -> Response:
        """200 once the model is loaded and warmed and the worker runs; 503 before and after."""
        try:
            service.require_ready()
        except StructsentError as err:
            return error_json(str(err), "unhealthy", status=503)
        return JSONResponse({"status": "ok"})

    @app.get("/info", operation_id="info", response_model=InfoResponse, responses=UNAUTHORIZED, tags=["service"])
    async def info() -> Response:
        """The model, its labels, the runtime and the server's limits."""
        return JSONResponse(service.info())

    @app.get(
        "/metrics", operation_id="metrics", response_class=PlainTextResponse, responses=UNAUTHORIZED, tags=["service"]
    )
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=ServerMetrics.content_type)

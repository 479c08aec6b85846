"""The HTTP app: routes, the middleware around them, bounds on a request's JSON, and typed errors
answered with their statuses (statuses.py).

The service (service.py) loads and warms the model in a background thread while the server
already answers ``/health`` (503, then 200), and labels requests through the MicroBatcher.
Well-formed requests to the labelling routes are answered by ``DirectRoutes`` (direct.py) without
the framework's routing layers; every other request by the framework's routes.

>>> app = create_app(ServerSettings(model="default"))                     # doctest: +SKIP
>>> # uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Route

from .. import __version__
from ..errors import BadInputError, StructsentError
from ..io.readers import DuplicateKeyError, NonFiniteNumberError
from ..results import LabelResult
from .apidocs import PATHS as API_DOCS_PATHS
from .apidocs import add_offline_docs
from .direct import DirectRoute, DirectRoutes, Receive, json_body
from .metrics import ServerMetrics
from .middleware import (
    BODY_METHODS,
    BearerAuth,
    BodyLimits,
    CloseWhenDraining,
    ConnectionPolicy,
    HttpVersions,
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
from .service import SentimentService, check_text_count
from .settings import ServerSettings
from .statuses import ClientDisconnectedError, error_type_of_status, status_of
from .tei import check_predictable, predict_texts, ranked_predictions, requested_truncation, score_function

OPEN_PATHS = frozenset({"/health"})  # answered without the API key (probes carry none)


# With --api-key, the API's description is answered without the key too (it holds no data), so
# that a browser can load /docs, whose Authorize button then sends the key on every call it makes.
DOCUMENTATION_PATHS = API_DOCS_PATHS | {"/openapi.json"}
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
        check_text_count(len(items), settings)
    if len(value) > MAX_BODY_FIELDS:
        names = ", ".join(repr(name[:40]) for name in itertools.islice(value, 5))
        raise BadInputError(f"body: the object has {len(value):,} fields ({names}, ...); a request has at most "
                            f"{MAX_BODY_FIELDS}")


def result_json(result: LabelResult) -> dict:
    return {
        "label": result.label,
        "score": result.score,
        "scores": result.scores,
        "error": result.error,
        "truncated": result.truncated,
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: _error_response("The server has an API key and the request lacks `Authorization: Bearer <key>`")
}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    408: _error_response("The body did not arrive within `read_timeout_s` (`limit`, `limit_value`)"),
    413: _error_response("A request limit was exceeded (`limit` names it, `limit_value` is its value)"),
    415: _error_response("A Content-Encoding other than identity, or a charset other than UTF-8: send the body "
                         "uncompressed, in UTF-8"),
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
    app.add_middleware(HttpVersions, on_reject=service.metrics.observe_error)
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

"""The labelling routes answered straight from ASGI, past the framework's routing and validation.

Under load the event loop shares a small machine's cores with the model, so every millisecond
the HTTP side spends per request is taken from the model. The framework's layers under our
own middleware (routing, dependency solving, its exception and telemetry middleware) cost more
than the route's own work; for the hot routes this middleware (the innermost) answers instead.

It answers only requests the framework would accept: a ``POST`` to one of its paths, the JSON
content type, a body that ``json_body`` reads and the
route's pydantic model validates. Any other request, including every malformed one, goes on to
the framework with its body replayed, so error answers stay the framework's, word for word. The
route's answer is the same function the framework's route calls; typed errors are turned into
answers by the same function as the framework's exception handler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from ..errors import StructsentError
from ..io.readers import json_with_unique_keys

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]  # an ASGI receive
Answer = Callable[[Any, Receive], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class DirectRoute:
    """A POST route: the request model its body must validate as, and the function that answers."""

    model: type[BaseModel]
    answer: Answer  # (validated body, the request's receive: to notice a client that leaves) -> response


class DirectRoutes:
    """ASGI middleware: answers well-formed JSON POSTs to ``routes`` itself, passes on the rest."""

    def __init__(
        self, app, *, routes: Mapping[str, DirectRoute], error_response: Callable[[StructsentError], Response],
        check_json: Callable[[Any, str], None] = lambda value, path: None,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.error_response = error_response
        self.check_json = check_json  # bounds on (the JSON, the path) before validation; raises a StructsentError

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not is_json_content(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client left before its request was whole: nobody to answer
            return
        try:
            path = scope["path"]
            parsed = parse_body(route.model, body, lambda value: self.check_json(value, path))
            if parsed is None:
                await self.app(scope, replaying(body, receive), send)
                return
            response = await route.answer(parsed, receive)
        except StructsentError as err:
            response = self.error_response(err)
        await response(scope, receive, send)


def is_json_content(headers) -> bool:
    """``application/json``, with parameters or none: JSON to the framework and to us alike. No
    content type (the framework refuses it), ``+json`` types and the rest go to the framework."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def read_body(receive: Receive) -> bytes | None:
    """The whole body (the body limits middleware, outside, has already bounded it), or None
    if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_body(body: bytes) -> Any:
    """A request's JSON, as every route reads it: UTF-8 (a byte-order mark allowed), and an object
    with a key that appears twice refused (a ValueError), where json.loads would keep its last value."""
    return json_with_unique_keys(body.decode("utf-8-sig"))


def parse_body(model: type[BaseModel], body: bytes, check_json: Callable[[Any], None] = lambda value: None
               ) -> BaseModel | None:
    """The body validated as the route's model, or None: the framework then answers. ``check_json``
    bounds the JSON before validation (its StructsentError goes to the caller)."""
    if not body:
        return None
    try:
        value = json_body(body)
    except (ValueError, RecursionError):  # JSON errors and UnicodeDecodeError are ValueErrors
        return None
    check_json(value)
    try:
        return model.model_validate(value)  # as the framework: the JSON, then the model
    except (ValueError, RecursionError, ValidationError):
        return None


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` that returns the body, whole, once, then the rest of the request's messages."""
    replayed = False

    async def replay_then_receive() -> MutableMapping[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_then_receive

"""The labelling routes answered straight from ASGI: only well-formed requests, answered exactly
as the framework's routes answer them; everything else reaches the framework with its body."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from structsent.errors import BadInputError
from structsent.server.app import create_app, framework_telemetry
from structsent.server.direct import DirectRoute, DirectRoutes
from structsent.server.service import SentimentService
from structsent.server.settings import ServerSettings


# -- the middleware alone, around a framework that records what reaches it -----------------------
class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str


class Framework:
    """Stands for the framework: records each request's method, path and whole body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append((scope["method"], scope["path"], body))
        await JSONResponse({"framework": True}, status_code=299)(scope, receive, send)


async def answer_echo(body: Echo, receive) -> JSONResponse:
    if body.word == "refuse":
        raise BadInputError("refused")
    return JSONResponse({"direct": body.word})


def call(requests: list[dict]) -> tuple[list[httpx.Response], Framework]:
    framework = Framework()
    app = DirectRoutes(
        framework, routes={"/echo": DirectRoute(Echo, answer_echo)},
        error_response=lambda err: JSONResponse({"typed": str(err)}, status_code=422),
    )

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.request(**request) for request in requests]

    return asyncio.run(run()), framework


def test_a_well_formed_request_is_answered_without_the_framework():
    (response,), framework = call([dict(method="POST", url="/echo", json={"word": "好"})])
    assert response.status_code == 200 and response.json() == {"direct": "好"}
    assert framework.seen == []


@pytest.mark.parametrize(
    "request_",
    [
        dict(method="POST", url="/echo", content=b'{"word": "a"', headers={"content-type": "application/json"}),
        dict(method="POST", url="/echo", json={"word": 1}),
        dict(method="POST", url="/echo", json={"word": "a", "extra": 1}),
        dict(method="POST", url="/echo", content=b"", headers={"content-type": "application/json"}),
        dict(method="POST", url="/echo", content=b'{"word": "a"}', headers={"content-type": "text/plain"}),
        dict(method="POST", url="/echo", content=b'{"word": "a"}', headers={"content-type": "application/x+json"}),
        dict(method="POST", url="/echo", content=b'{"word": "\xff"}', headers={"content-type": "application/json"}),
        dict(method="POST", url="/echo", content=b"[" * 100_000, headers={"content-type": "application/json"}),
        dict(method="POST", url="/echo", content=b'{"word": "a"}'),
        dict(method="PUT", url="/echo", json={"word": "a"}),
        dict(method="POST", url="/echo/", json={"word": "a"}),
        dict(method="POST", url="/other", json={"word": "a"}),
    ],
    ids=["broken-json", "wrong-type", "extra-field", "empty", "text-plain", "plus-json", "not-utf8", "deep",
         "no-content-type", "put", "trailing-slash", "other-path"],
)
def test_anything_else_reaches_the_framework_with_its_whole_body(request_):
    (response,), framework = call([request_])
    assert response.status_code == 299
    sent = httpx.Request(**{**request_, "url": "http://t" + request_["url"]}).read()
    assert framework.seen == [(request_["method"], request_["url"], sent)]


def parts(*chunks: bytes):
    async def stream():
        for chunk in chunks:
            yield chunk
    return stream()


def test_a_body_in_several_messages_is_read_whole_either_way():
    json_type = {"content-type": "application/json"}
    (answered, passed), framework = call([
        dict(method="POST", url="/echo", content=parts(b'{"word":', b' "a"}'), headers=json_type),
        dict(method="POST", url="/echo", content=parts(b'{"word":', b' 1}'), headers=json_type),
    ])
    assert answered.status_code == 200 and answered.json() == {"direct": "a"}
    assert passed.status_code == 299 and framework.seen == [("POST", "/echo", b'{"word": 1}')]


def test_a_typed_error_is_answered_by_the_error_function():
    (response,), framework = call([dict(method="POST", url="/echo", json={"word": "refuse"})])
    assert response.status_code == 422 and response.json() == {"typed": "refused"} and framework.seen == []


# -- the real app: the same answers with and without the direct routes ----------------------------
@pytest.fixture(scope="module")
def service(hf_model_dir):
    frozen_before = gc.get_freeze_count()
    service = SentimentService(ServerSettings(model=str(hf_model_dir), max_texts=8, max_text_chars=300))
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    yield service
    service.stop(timeout=10)
    if not frozen_before:
        gc.unfreeze()  # the service froze this test process's objects; later tests expect none


def answers(app, requests: list[dict]) -> list[tuple[int, str | None, bytes]]:
    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            responses = [await client.request(**request) for request in requests]
        return [(r.status_code, r.headers.get("content-type"), r.content) for r in responses]

    return asyncio.run(run())


def framework_only(app):
    app.user_middleware = [m for m in app.user_middleware if m.cls is not DirectRoutes]
    return app


LONG = "这家店的菜味道很好，" * 40
REQUESTS = [
    dict(method="POST", url="/v1/sentiment", json={"texts": ["味道不错，送餐很快", "差评", "", "  ", "ok 👍"]}),
    dict(method="POST", url="/v1/sentiment", json={"texts": [LONG[:290]]}),
    dict(method="POST", url="/v1/sentiment", json={"texts": [LONG]}),  # over max_text_chars: 413
    dict(method="POST", url="/v1/sentiment", json={"texts": ["a"] * 9}),  # over max_texts: 413
    dict(method="POST", url="/v1/sentiment", json={"texts": []}),
    dict(method="POST", url="/v1/sentiment", json={"texts": "差评"}),
    dict(method="POST", url="/predict", json={"inputs": "味道不错"}),
    dict(method="POST", url="/predict", json={"inputs": ["味道不错", "差评"], "raw_scores": True}),
    dict(method="POST", url="/predict", json={"inputs": [["味道不错"], ["差评"]]}),
    dict(method="POST", url="/predict", json={"inputs": "差评", "parameters": {"function_to_apply": "sigmoid", "top_k": 1}}),
    dict(method="POST", url="/predict", json={"inputs": ""}),  # a flagged text refuses a TEI request: 422
    dict(method="POST", url="/predict", json={"inputs": "好" * 200, "truncate": False}),
    dict(method="POST", url="/", json={"inputs": ["味道不错"]}),
    dict(method="POST", url="/", json={"inputs": [["a", "b"]]}),
    dict(method="POST", url="/predict", content=b'{"inputs": "a",}', headers={"content-type": "application/json"}),
    dict(method="POST", url="/predict", content=b'{"inputs": "\\ud800"}', headers={"content-type": "application/json"}),
    dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"}),
    dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["a"]}'),  # no content type
    dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["a"], "texts": ["b", "c"]}',  # 422: which?
         headers={"content-type": "Application/JSON; charset=utf-8"}),
    dict(method="POST", url="/predict", content=b'{"inputs": "a", "truncate": true, "truncate": false}',
         headers={"content-type": "application/json"}),
    dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["\xe5\xa5\xbd"]}',
         headers={"content-type": "application/json; charset=utf-8"}),
    dict(method="POST", url="/v1/sentiment", json={"texts": [1] * 9}),  # over max_texts before validation: 413
    dict(method="POST", url="/predict", json={"inputs": [[]] * 9}),
    dict(method="POST", url="/v1/sentiment", json={"texts": ["a"], **{f"k{i}": 1 for i in range(40)}}),
]


def test_every_answer_is_the_frameworks_byte_for_byte(service, hf_model_dir):
    direct = answers(create_app(service.settings, service=service), REQUESTS)
    framework = answers(framework_only(create_app(service.settings, service=service)), REQUESTS)
    for request, got, expected in zip(REQUESTS, direct, framework):
        assert got == expected, request
    statuses = [status for status, _, _ in direct]
    assert statuses.count(200) >= 9 and {413, 422} <= set(statuses)  # the corpus holds both kinds
    repeated = [body for request, (status, _, body) in zip(REQUESTS, direct)
                if b'"texts": ["a"], "texts"' in request.get("content", b"") or b'"truncate": true, "truncate"'
                in request.get("content", b"")]
    assert len(repeated) == 2 and all(b"appears more than once in one object" in body for body in repeated)


@pytest.mark.parametrize(("request_", "status", "says"), [
    (dict(url="/v1/sentiment", json={"texts": [1] * 200_000}), 413,
     "200000 texts in one request; the limit is max_texts=8"),
    (dict(url="/predict", json={"inputs": [[]] * 200_000}), 413, "200000 texts in one request"),
    (dict(url="/predict", content=json.dumps({"inputs": [" "] * 200_000}),
          headers={"content-type": "application/vnd.api+json"}), 413, "200000 texts in one request"),
    (dict(url="/v1/sentiment", json={"texts": ["a"], **{f"k{i}": 1 for i in range(50_000)}}), 422,
     "body: the object has 50,001 fields ('texts', 'k0', 'k1', 'k2', 'k3', ...); a request has at most 32"),
])
def test_a_body_of_many_bad_items_is_refused_before_validation(service, request_, status, says):
    """Validation made one error per item, twice (the direct route, then the framework's): one 1 MB
    body of 500,000 numbers held the event loop 4-7 s (every client and /health waited) and grew
    the server by 600 MB, for a 422 that showed five of them."""
    for app in (create_app(service.settings, service=service),
                framework_only(create_app(service.settings, service=service))):
        ((got, _, body),) = answers(app, [dict(method="POST", **request_)])
        assert got == status and says in json.loads(body)["error"], body[:300]


def test_a_list_the_route_does_not_read_is_not_counted(service):
    """/predict ignores fields it does not know (TEI): a "texts" list of 300 beside "inputs" was a 413."""
    request = dict(method="POST", url="/predict", json={"inputs": "好吃", "texts": ["x"] * 300})
    for app in (create_app(service.settings, service=service),
                framework_only(create_app(service.settings, service=service))):
        ((status, _, body),) = answers(app, [request])
        assert status == 200, body


def test_a_field_name_that_is_a_lone_surrogate_is_named_as_such(service):
    """It was "body: Input should be a valid string, unable to parse raw data as a unicode string"."""
    request = dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["ok"], "\\ud800": 1}',
                   headers={"content-type": "application/json"})
    ((status, _, body),) = answers(create_app(service.settings, service=service), [request])
    assert status == 422 and json.loads(body)["error"] == (
        "body: a field name holds a lone UTF-16 surrogate escape, which is not a character")
    value = dict(method="POST", url="/predict", content=b'{"inputs": "a", "truncation_direction": "\\ud800"}',
                 headers={"content-type": "application/json"})
    ((status, _, body),) = answers(create_app(service.settings, service=service), [value])
    assert status == 422 and json.loads(body)["error"] == (
        "truncation_direction: holds a lone UTF-16 surrogate escape, which is not a character")


@pytest.mark.parametrize("url, body", [
    ("/v1/sentiment", b'{"texts": ["a"], "\\ud800": 1, "\\ud800": 2}'),
    ("/predict", b'{"inputs": "a", "\\udfff": 1, "\\udfff": 2}'),
    ("/", b'{"inputs": "a", "parameters": {"\\ud800x": 1, "\\ud800x": 2}}'),
])
def test_a_repeated_key_that_holds_a_lone_surrogate_is_a_422_naming_it(service, url, body):
    """The message naming the key could not be written as UTF-8: a 500 'backend' error, a traceback
    logged for every such request, and the error counted twice (validation, then backend)."""
    request = dict(method="POST", url=url, content=body, headers={"content-type": "application/json"})
    for app in (create_app(service.settings, service=service),
                framework_only(create_app(service.settings, service=service))):
        ((status, _, answer),) = answers(app, [request])
        error = json.loads(answer)["error"]
        assert status == 422 and "appears more than once in one object" in error, answer
        assert ("\\ud800" in error or "\\udfff" in error) and error.isprintable(), error


def test_a_client_value_an_error_names_is_shown_cut_to_its_start_and_length(service):
    """A 900,000-character field name, a duplicated one, or a long Content-Type came back whole in
    the 422 (a 900 KB error message)."""
    key = "k" * 400_000
    requests = [
        dict(method="POST", url="/v1/sentiment", content=json.dumps({"texts": ["a"], key: 1}).encode(),
             headers={"content-type": "application/json"}),
        dict(method="POST", url="/v1/sentiment", content=('{"texts": ["a"], "%s": 1, "%s": 2}' % (key, key)).encode(),
             headers={"content-type": "application/json"}),
        dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["a"]}', headers={"content-type": "x" * 60_000}),
    ]
    for app in (create_app(service.settings, service=service),
                framework_only(create_app(service.settings, service=service))):
        for status, _, body in answers(app, requests):
            assert status == 422 and len(body) < 1000, body[:300]
            assert "k" * 60 + "... (400,000 characters)" in json.loads(body)["error"] or \
                "x" * 60 + "... (60,000 characters)" in json.loads(body)["error"], body
        # an unknown route's path, and a method a route does not take (404, 405)
        for request, status in ((dict(method="GET", url="/" + "z" * 6000), 404),
                                (dict(method="DELETE", url="/v1/sentiment" + "y" * 6000), 404),
                                (dict(method="DELETE", url="/v1/sentiment"), 405)):
            ((got, _, body),) = answers(app, [request])
            assert got == status and len(body) < 1000, body[:300]


def test_the_direct_app_labels_as_the_library_does(service, clf):
    texts = ["味道不错，送餐很快", "差评，再也不来了"]
    ((status, _, body),) = answers(create_app(service.settings, service=service),
                                   [dict(method="POST", url="/v1/sentiment", json={"texts": texts})])
    assert status == 200
    served = json.loads(body)["results"]
    expected = service.classifier(texts)
    assert [r["label"] for r in served] == [r.label for r in expected]
    assert all(abs(r["score"] - e.score) < 1e-6 for r, e in zip(served, expected))


def test_the_frameworks_own_telemetry_is_off_unless_the_operator_turns_it_on():
    """FastAPI's OpenTelemetry hook asks the global providers on every request; off by default."""
    off = framework_telemetry({})
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        assert off == {}  # a FastAPI without it: nothing to turn off
        return
    assert off == {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    assert framework_telemetry({"FASTAPI_OTEL_AUTO_CONFIGURE": "TRUE"}) == {}
    config = create_app(ServerSettings())._telemetry  # what FastAPI's per-request check reads first
    assert not (config["tracing"] or config["metrics"] or config["logs"])


def test_a_trailing_slash_is_an_unknown_route_not_a_redirect_to_the_clients_host():
    """The framework answered 307 with a Location built from the Host header (an open redirect)."""
    from starlette.testclient import TestClient

    client = TestClient(create_app(ServerSettings()), base_url="http://evil.example")
    response = client.post("/v1/sentiment/", json={"texts": ["好"]}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error_type"] == "validation"


# -- TEI's truncate and truncation_direction -------------------------------------------------------
@pytest.fixture(scope="module")
def windowed_service(hf_model_dir):
    from structsent.config import EngineConfig

    frozen_before = gc.get_freeze_count()
    engine = EngineConfig(long_text="windows", window_stride=16, max_length=32)
    service = SentimentService(ServerSettings(model=str(hf_model_dir), engine=engine))
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    yield service
    service.stop(timeout=10)
    if not frozen_before:
        gc.unfreeze()


def predict(service, **body):
    ((status, _, content),) = answers(create_app(service.settings, service=service),
                                      [dict(method="POST", url="/predict", json={"raw_scores": True, **body})])
    return status, json.loads(content)


def raw_logits(classifier, text):
    (result,) = classifier([text])
    return {label: pytest.approx(value, abs=1e-5) for label, value in result.logits.items()}


def test_truncate_and_its_direction_are_the_requests_own_whatever_the_servers_policy(windowed_service, hf_model_dir):
    """On a --long-text windows server, truncate was ignored (true scored windows, false answered
    200) and truncation_direction was dropped unread."""
    long = "非常好吃，推荐！" * 6 + "太难吃了，差评！" * 6  # 96 characters, one token each: over max_length 32
    head, tail = long[:30], long[-30:]  # what a cut at the start / the end keeps
    clf = windowed_service.classifier
    as_dict = lambda answer: {item["label"]: item["score"] for item in answer}  # noqa: E731
    status, windows = predict(windowed_service, inputs=long)
    assert status == 200 and as_dict(windows) == raw_logits(clf, long)  # absent: the server's windows
    assert as_dict(predict(windowed_service, inputs=long, truncate=True)[1]) == raw_logits(clf, head)
    assert as_dict(predict(windowed_service, inputs=long, truncate=True, truncation_direction="Left")[1]) == \
        raw_logits(clf, tail)
    # truncate absent: the server's policy (windows here; a truncating server cuts at the chosen end)
    assert as_dict(predict(windowed_service, inputs=long, truncation_direction="Left")[1]) == raw_logits(clf, long)
    status, refused = predict(windowed_service, inputs=long, truncate=False)
    assert status == 413 and refused["limit"] == "max_length"
    assert predict(windowed_service, inputs=head, truncate=False)[0] == 200  # short enough: answered
    status, refused = predict(windowed_service, inputs=long, truncation_direction="sideways")
    assert status == 422 and "truncation_direction" in refused["error"]


@pytest.mark.parametrize(("headers", "named"), [({}, "none"), ({"content-type": "text/plain"}, "Content-Type: text/plain"),
                                                ({"content-type": "application/x-www-form-urlencoded"}, "x-www-form")])
def test_a_body_not_sent_as_json_is_told_to_say_so(service, headers, named):
    """curl -d sends a form's content type: the answer said only "Input should be a valid dictionary"."""
    ((status, _, body),) = answers(create_app(service.settings, service=service), [
        dict(method="POST", url="/v1/sentiment", content=b'{"texts": ["a"]}', headers=headers)])
    message = json.loads(body)["error"]
    assert status == 422 and message.startswith("send the body as JSON with the header Content-Type: application/json")
    assert named in message


def test_only_small_requests_of_known_characters_are_tokenized_on_the_event_loop(hf_model_dir):
    """Learning a never-seen character costs ~0.1 ms: 2,000 of them (CJK extension B) in one
    request held the loop for 0.1-0.2 s, and every other client waited."""
    from structsent.server.service import INLINE_TOKENIZE_CHARS, tokenize_on_the_loop

    fresh = structsent_load(hf_model_dir)
    fresh.tokenizer.learn_vocabulary()
    assert tokenize_on_the_loop(fresh, ["味道不错，送餐很快", "差评"])
    assert not tokenize_on_the_loop(fresh, ["好" * (INLINE_TOKENIZE_CHARS + 1)])
    unseen = "".join(chr(0x20000 + i) for i in range(40))  # outside the vocabulary: never met yet
    assert not tokenize_on_the_loop(fresh, ["味道不错" + unseen])
    fresh.encode([unseen])  # once met (in the tokenizer thread), they are known
    assert tokenize_on_the_loop(fresh, ["味道不错" + unseen])


def structsent_load(directory):
    import structsent

    return structsent.load(directory, backend="torch")

"""Every endpoint of a real server process, its limits and its error answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import re
import time
from pathlib import Path

import pytest

import structsent
from structsent.config import EngineConfig
from structsent.errors import ConfigError
from structsent.runtime import usable_cores
from structsent.server.service import SentimentService
from structsent.server.settings import ServerSettings, engine_config_for, model_workers_on

from .conftest import metric

pytestmark = pytest.mark.slow  # real server processes


def label(server, texts):
    response = server.client.post("/v1/sentiment", json={"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()["results"]


# -- the native API ---------------------------------------------------------------------------
def test_sentiment_labels_texts_in_input_order(server, real_reviews):
    texts = real_reviews[:5]
    results = label(server, texts)
    assert len(results) == 5
    for result in results:
        assert set(result) == {"label", "score", "scores", "error", "truncated"}
        assert result["label"] in ("负面", "正面")
        assert result["score"] == max(result["scores"].values())
        assert sum(result["scores"].values()) == pytest.approx(1.0)
        assert result["error"] is None
    # Input order: each text alone gets the result it got inside the request.
    for text, merged in zip(texts, results):
        (alone,) = label(server, [text])
        assert alone["label"] == merged["label"]
        assert alone["score"] == pytest.approx(merged["score"], abs=1e-5)


def test_unusable_texts_come_back_flagged_not_failed(server):
    results = label(server, ["很好吃", "", "   "])
    assert results[0]["error"] is None and results[0]["label"] is not None
    assert [r["error"] for r in results[1:]] == ["empty text", "empty text"]
    assert results[1]["label"] is None and results[1]["score"] is None


# -- TEI compatibility ------------------------------------------------------------------------
def test_predict_single_text_is_a_flat_list_sorted_by_score(server):
    body = server.client.post("/predict", json={"inputs": "味道很好"}).json()
    assert [p["label"] for p in body] and set(body[0]) == {"label", "score"}
    assert {p["label"] for p in body} == {"负面", "正面"}
    assert body[0]["score"] >= body[1]["score"]
    (native,) = label(server, ["味道很好"])
    assert body[0]["label"] == native["label"]
    assert body[0]["score"] == pytest.approx(native["score"], abs=1e-5)


@pytest.mark.parametrize("path", ["/predict", "/"])
@pytest.mark.parametrize("inputs", [[["很好"], ["很差"], ["一般"]], ["很好", "很差", "一般"]])
def test_predict_batch_is_one_sorted_list_per_text(server, path, inputs):
    body = server.client.post(path, json={"inputs": inputs}).json()
    assert len(body) == 3
    natives = label(server, ["很好", "很差", "一般"])
    for predictions, native in zip(body, natives):
        assert predictions[0]["label"] == native["label"]
        assert predictions[0]["score"] >= predictions[1]["score"]
        assert predictions[0]["score"] == pytest.approx(native["score"], abs=1e-5)


def test_predict_raw_scores_are_the_model_logits(server, hf_model_dir):
    """Checked against transformers on the same checkpoint, and against the softmax answer."""
    import torch
    import transformers

    text = "还可以"
    probabilities = server.client.post("/predict", json={"inputs": text}).json()
    raw = server.client.post("/predict", json={"inputs": text, "raw_scores": True}).json()
    none = server.client.post("/predict", json={"inputs": text, "parameters": {"function_to_apply": "none"}}).json()
    sigmoid = server.client.post("/predict", json={"inputs": text, "parameters": {"function_to_apply": "sigmoid"}}).json()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
    with torch.no_grad():
        expected = model(**tokenizer([text], return_tensors="pt")).logits[0].tolist()
    logits = {p["label"]: p["score"] for p in raw}
    assert logits == pytest.approx({model.config.id2label[i]: z for i, z in enumerate(expected)}, abs=1e-4)
    assert none[0] == raw  # the parameters form answers a batch of one
    assert [p["label"] for p in raw] == [p["label"] for p in probabilities]
    shift = math.log(sum(math.exp(z) for z in logits.values()))
    for p in probabilities:
        assert math.log(p["score"]) == pytest.approx(logits[p["label"]] - shift, abs=1e-6)
    for p in sigmoid[0]:
        assert p["score"] == pytest.approx(1 / (1 + math.exp(-logits[p["label"]])), abs=1e-6)


def test_predict_parameters_top_k_and_nesting(server):
    body = server.client.post("/predict", json={"inputs": "好评", "parameters": {"top_k": 1}}).json()
    assert len(body) == 1 and len(body[0]) == 1  # HF Inference API shape: one list per input
    best = server.client.post("/predict", json={"inputs": "好评"}).json()[0]
    assert body[0][0] == best


def test_predict_refuses_what_tei_refuses(server):
    pair = server.client.post("/predict", json={"inputs": [["问题", "回答"]]})
    assert pair.status_code == 422 and "pairs" in pair.json()["error"]
    empty = server.client.post("/predict", json={"inputs": ""})
    assert empty.status_code == 422 and "empty text" in empty.json()["error"]
    unknown = server.client.post("/predict", json={"inputs": "好", "parameters": {"function_to_apply": "relu"}})
    assert unknown.status_code == 422


def test_raw_scores_beside_another_function_is_refused_not_overridden(server):
    """raw_scores: true with function_to_apply "sigmoid" answered the logits without a word."""
    for function in ("sigmoid", "softmax"):
        both = server.client.post("/predict", json={"inputs": "好", "raw_scores": True,
                                                    "parameters": {"function_to_apply": function}})
        assert both.status_code == 422 and both.json() == {
            "error": f"raw_scores: true asks for the raw logits, parameters.function_to_apply '{function}' for its "
                     "scores: send one of the two", "error_type": "validation"}
    agreeing = server.client.post("/predict", json={"inputs": "好", "raw_scores": True,
                                                    "parameters": {"function_to_apply": "none"}})
    assert agreeing.status_code == 200 and agreeing.json() == [
        server.client.post("/predict", json={"inputs": "好", "raw_scores": True}).json()]


def test_predict_truncates_only_when_allowed(server):
    too_long = "好" * 300  # within max_text_chars (400), beyond max_length (258 tokens)
    refused = server.client.post("/predict", json={"inputs": too_long, "truncate": False})
    assert refused.status_code == 413
    assert refused.json()["limit"] == "max_length" and "truncate" in refused.json()["error"]
    assert refused.json()["limit_value"] == 258
    for truncate in (True, None):
        allowed = server.client.post("/predict", json={"inputs": [[too_long]], "truncate": truncate})
        assert allowed.status_code == 200 and len(allowed.json()[0]) == 2
    (native,) = label(server, [too_long])
    assert native["truncated"] is True and native["error"] is None


def test_huggingface_hub_client_works_unchanged(server, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    # The suite runs with the hubs offline; this client talks to the loopback server only.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    client = InferenceClient(base_url=server.url)
    output = client.text_classification("这家店服务很好")
    assert [o.label for o in output] and len(output) == 2
    assert output[0].score >= output[1].score
    (native,) = label(server, ["这家店服务很好"])
    assert output[0].label == native["label"]
    assert output[0].score == pytest.approx(native["score"], abs=1e-5)
    top = client.text_classification("这家店服务很好", top_k=1)
    assert len(top) == 1 and top[0].label == native["label"]


# -- health, info, metrics --------------------------------------------------------------------
def test_health_and_info(server, hf_model_dir):
    assert server.client.get("/health").json() == {"status": "ok"}
    info = server.client.get("/info").json()
    assert info["ready"] is True
    assert info["labels"] == ["负面", "正面"]
    assert info["backend"] == "onnx" and info["model"] == str(hf_model_dir)  # auto on CPU: ONNX Runtime
    assert info["limits"]["max_texts"] == 8 and info["limits"]["max_body_bytes"] == 4096
    assert info["max_length"] == 258
    assert info["limits"]["max_wait_ms"] == 50 and info["limits"]["max_batch_tokens"] == 4096
    # the engine's settings under the names of EngineConfig's fields (and of the flags)
    assert info["token_budget"] == 4096 and info["max_batch_size"] == 64 and info["batch_overhead_tokens"] == 32
    assert info["pad_multiple"] is None and "num_threads" in info
    assert info["limits"]["model_workers"] == 1 and info["num_threads"] is None  # one model call on every core


@pytest.mark.parametrize("path", ["/health", "/info", "/openapi.json", "/docs"])
def test_head_answers_where_get_does_with_its_headers_and_no_body(server, path):
    """Load balancers and uptime checkers probe with HEAD; the keep-alive connection stays usable."""
    got = server.client.get(path)
    head = server.client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    assert server.client.get("/health").json() == {"status": "ok"}  # the same connection, not desynchronised


def test_concurrent_requests_are_merged_into_batches(server, real_reviews):
    before = server.metrics()
    texts = real_reviews[10:26]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        merged = list(pool.map(lambda t: label(server, [t])[0], texts))
    after = server.metrics()

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("structsent_batch_size_sum") == 16
    batches = delta("structsent_batch_size_count")
    assert 1 <= batches <= 8, f"16 concurrent requests ran as {batches} batches"
    assert delta("structsent_batch_requests_bucket", le="1.0") < batches  # some batch merged requests
    assert delta("structsent_texts_total") == 16
    assert delta("structsent_request_duration_seconds_count", endpoint="/v1/sentiment", status="200") == 16
    for text, result in zip(texts, merged):  # merging changes nothing in the results
        (alone,) = label(server, [text])
        assert alone["label"] == result["label"]
        assert alone["score"] == pytest.approx(result["score"], abs=1e-5)


def test_metrics_expose_every_family(server):
    text = server.client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    for family in (
        "structsent_request_duration_seconds",
        "structsent_batch_size",
        "structsent_batch_tokens",
        "structsent_queue_depth",
        "structsent_texts_total",
        "structsent_text_errors_total",
        "structsent_errors_total",
    ):
        assert f"# TYPE {family} " in text.text, family
    assert metric(server.metrics(), "structsent_queue_depth") == 0


# -- limits and malformed requests ------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"texts": ["好"] * 9}, "max_texts"),
        ({"texts": ["好", "差" * 401]}, "max_text_chars"),
        ({"texts": ["好" * 250] * 8}, "max_body_bytes"),
    ],
)
def test_limits_are_refused_with_413_naming_the_limit(server, body, limit):
    before = metric(server.metrics(), "structsent_errors_total", error_type="validation")
    response = server.client.post("/v1/sentiment", json=body)
    assert response.status_code == 413
    assert response.json()["limit"] == limit
    assert limit in response.json()["error"]
    assert response.json()["limit_value"] == server.client.get("/info").json()["limits"][limit]
    assert metric(server.metrics(), "structsent_errors_total", error_type="validation") == before + 1


def test_chunked_body_over_the_limit_is_refused(server):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = server.client.post("/v1/sentiment", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["limit"] == "max_body_bytes"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"texts": ["a",', "malformed JSON"),
        # the parser's message whole, with where it stopped (it ended on "starting at")
        (b'{"texts": ["a', "malformed JSON: Unterminated string starting at: line 1 column 12 (char 11)"),
        (b'{bad}', "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{\n  "texts": ["a",]\n}', "malformed JSON: Expecting value: line 2 column 17 (char 18)"),
        (b'{"texts": [1, 2]}', "texts.0"),
        (b'{"texts": "one string"}', "texts"),
        (b'{"texts": []}', "texts"),
        (b'{"text": ["typo"]}', "texts"),
        (b'["no object"]', "body"),
    ],
)
def test_malformed_requests_get_422(server, content, fragment):
    response = server.client.post("/v1/sentiment", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation" and fragment in body["error"]


@pytest.mark.parametrize(("path", "content", "token"), [
    ("/predict", b'{"inputs": "a", "ignored": NaN}', "NaN"),
    ("/predict", b'{"inputs": "a", "parameters": {"top_k": null}, "ignored": {"deep": [1, Infinity]}}', "Infinity"),
    ("/", b'{"inputs": ["a"], "ignored": -Infinity}', "-Infinity"),
    ("/v1/sentiment", b'{"texts": ["a", NaN]}', "NaN"),
])
def test_nan_and_infinity_are_refused_anywhere_as_malformed_json(server, path, content, token):
    """Python's json reads NaN, Infinity and -Infinity, which JSON does not have: in a field the
    route ignores they were taken and the texts labelled (200)."""
    response = server.client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "validation"
    assert response.json()["error"] == f"malformed JSON: {token} is not a JSON number (JSON has no NaN or infinity)"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": 3}, "inputs"),
        ({"inputs": "好", "raw_scores": 0}, "raw_scores"),  # strict: no 0 for false
        ({"inputs": "好", "raw_scores": "true"}, "raw_scores"),
        ({"inputs": "好", "truncate": "yes"}, "truncate"),
        ({"inputs": "好", "parameters": {"top_k": "2"}}, "top_k"),  # strict: no "2" for 2
        ({"inputs": "好", "parameters": {"top_k": 1.0}}, "top_k"),
        ({"inputs": "好", "parameters": {"top_k": 0}}, "top_k"),
        ({"inputs": [[]]}, "inputs"),  # the schema forbids what is refused
        ({"inputs": []}, "inputs"),
        ({"inputs": [["好"], "差"]}, "inputs"),
    ],
)
def test_predict_wrong_types_get_422(server, body, fragment):
    response = server.client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation" and fragment in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2/nothing", 404), ("POST", "/nothing", 404), ("GET", "/predict", 405), ("DELETE", "/health", 405)],
)
def test_unknown_routes_and_methods_answer_in_the_error_shape(server, method, path, status):
    response = server.client.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation"
    assert path in body["error"]
    if status == 405:  # every method the path answers (GET routes answer HEAD too: RFC 9110)
        assert response.headers["allow"] == {"/predict": "POST", "/health": "GET, HEAD"}[path]


@pytest.mark.parametrize(
    ("method", "path", "request_", "shown"),
    [
        # a field name: a line break and a colour change in the decoded message
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"], "x\\ny\\u001b[31m": 1}',
                                       headers={"content-type": "application/json"}), "x\\ny\\x1b[31m: Extra inputs"),
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"], "t\\u009b": 1, "t\\u009b": 2}',
                                       headers={"content-type": "application/json"}), "the key 't\\x9b' appears"),
        ("GET", "/%1b%5b31mX", {}, "Not Found: GET /\\x1b[31mX"),  # a path, percent-decoded
        # a header: C1 controls (0x9b is CSI, as ESC [) pass the HTTP parser as obs-text
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"]}', headers={"content-type": b"text/x\x9b31m"}),
         "Content-Type: text/x\\x9b31m)"),
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"]}', headers={"content-encoding": b"g\x85zip"}),
         "Content-Encoding: g\\x85zip is"),
        # UTF-8 in a header is shown as written (it was read as Latin-1: mojibake), other bytes escaped
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"]}', headers={"content-type": "text/纯文本".encode()}),
         "Content-Type: text/纯文本)"),
        ("POST", "/v1/sentiment", dict(content=b'{"texts": ["a"]}', headers={"content-encoding": "压缩".encode() + b"\xff"}),
         "Content-Encoding: 压缩\\xff is"),
    ],
)
def test_client_values_in_error_messages_have_their_control_characters_escaped(server, method, path, request_, shown):
    response = server.client.request(method, path, **request_)
    assert response.status_code in (404, 415, 422)
    message = response.json()["error"]
    assert shown in message, message
    assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", message), message


async def keepalive_session(port: int, texts: list[str]) -> list[dict]:
    """One HTTP/1.1 connection, one request per text in turn; an early close fails the read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for text in texts:
            body = json.dumps({"texts": [text]}).encode()
            writer.write(
                b"POST /v1/sentiment HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
            assert status_line.startswith("HTTP/1.1 200 "), status_line
            assert headers.get("connection") != "close"
            answers.append(json.loads(await reader.readexactly(int(headers["content-length"])))["results"][0])
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


def test_server_speaks_http_keepalive_under_concurrent_load(server, real_reviews):
    # Several connections at once, each kept open for several requests: every answer arrives, in
    # order, on its own connection, and is the text's own label.
    sessions = [real_reviews[30 + 6 * c : 36 + 6 * c] for c in range(4)]

    async def all_sessions():
        return await asyncio.gather(*(keepalive_session(server.port, texts) for texts in sessions))

    answers = asyncio.run(asyncio.wait_for(all_sessions(), timeout=60))
    for texts, session in zip(sessions, answers):
        assert len(session) == len(texts)
        for text, answer in zip(texts, session):
            (alone,) = label(server, [text])
            assert answer["label"] == alone["label"]
            assert answer["score"] == pytest.approx(alone["score"], abs=1e-5)


# -- the published API ------------------------------------------------------------------------
OPENAPI_DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"


def test_served_openapi_matches_the_committed_document(server):
    served = server.client.get("/openapi.json").json()
    committed = json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))
    assert served == committed, (
        "the HTTP API changed; if on purpose, regenerate docs/openapi.json (see docs/SERVER.md)"
    )
    assert set(served["paths"]) == {"/", "/predict", "/v1/sentiment", "/health", "/info", "/metrics"}


# -- the schema, fuzzed -----------------------------------------------------------------------
OPERATIONS = [("/v1/sentiment", "POST"), ("/predict", "POST"), ("/", "POST"), ("/health", "GET"), ("/info", "GET"),
              ("/metrics", "GET")]


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_answer_matches_the_published_schema(server, path, method):
    """Requests generated from docs/openapi.json, valid and invalid, 30 per operation: each gets
    a status the document lists, a body matching its schema, and no server error."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    # Limits set by flags (max_texts, max_body_bytes...) cannot be in the document: a valid
    # request over them is answered 413, which the document lists. Nor can tokenization: a
    # schema-valid text may hold no token once normalised ("\x0e", a lone combining mark), which
    # the TEI routes refuse as TEI does (422); /v1/sentiment flags it instead (200).
    statuses = '"2xx", "413", "422"' if path in ("/predict", "/") else '"2xx", "413"'
    config = schemathesis.config.SchemathesisConfig.from_str(
        f'[checks.positive_data_acceptance]\nexpected-statuses = [{statuses}]\n'
    )
    operation = schemathesis.openapi.from_path(OPENAPI_DOCUMENT, config=config)[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def answer_follows_the_schema(case):
        case.call_and_validate(base_url=server.url)

    answer_follows_the_schema()


# -- the service in-process: the tokenizer thread -------------------------------------------------
def test_a_request_whose_client_left_while_it_waited_for_the_tokenizer_is_never_tokenized(hf_model_dir):
    """Large requests of clients that had left were tokenized one after another on the one
    tokenizer thread, and live requests waited behind them (13.6 s for one text, measured); the
    texts waiting there did not count against max_queue either."""
    import threading

    from structsent.server.batcher import QueueFullError
    from structsent.server.service import INLINE_TOKENIZE_CHARS, SentimentService
    from structsent.server.settings import ServerSettings
    from structsent.server.statuses import ClientDisconnectedError

    service = SentimentService(ServerSettings(model=str(hf_model_dir), max_queue=3, max_texts=2))
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    held, release, tokenized = threading.Event(), threading.Event(), []
    encode = service.classifier.encode

    def holding_encode(texts, options):
        tokenized.append(texts[0][0])
        if texts[0][0] == "先":  # holds the tokenizer thread until released
            held.set()
            release.wait(30)
        return encode(texts, options)

    service.classifier.encode = holding_encode
    long = "很好" * INLINE_TOKENIZE_CHARS  # too long to tokenize on the event loop

    async def scenario():
        first = asyncio.ensure_future(service.label(["先" + long, "先" + long]))
        assert await asyncio.to_thread(held.wait, 30)
        with pytest.raises(QueueFullError):  # 2 texts at the tokenizer + 2 more > max_queue 3
            await service.label(["满" + long, "满" + long])
        gone = asyncio.Event()

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        leaving = asyncio.ensure_future(service.label(["走" + long], receive))
        await asyncio.sleep(0.1)  # queued behind the first on the tokenizer thread
        gone.set()
        with pytest.raises(ClientDisconnectedError):
            await leaving
        release.set()
        return await first

    try:
        results = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        release.set()
        service.stop(timeout=10)
    assert [r.error for r in results] == [None, None] and tokenized == ["先"]


def test_a_client_that_left_while_its_texts_were_tokenized_never_reaches_the_model(hf_model_dir):
    """Its leaving was read only once the tokenizer thread let go of the interpreter, after the
    texts had gone to the model: a departed client's 256 texts were computed, a live one waited."""
    from structsent.server.service import INLINE_TOKENIZE_CHARS, SentimentService
    from structsent.server.settings import ServerSettings
    from structsent.server.statuses import ClientDisconnectedError

    service = SentimentService(ServerSettings(model=str(hf_model_dir)))
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    encode, computed = service.classifier.encode, []

    async def scenario():
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        def encode_then_leave(texts, options):
            encoded = encode(texts, options)
            loop.call_soon_threadsafe(gone.set)  # the client leaves as its texts are tokenized
            return encoded

        service.classifier.encode = encode_then_leave

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        submit = service.batcher.submit

        def recording_submit(encoded):
            computed.append(len(encoded))
            return submit(encoded)

        service.batcher.submit = recording_submit
        with pytest.raises(ClientDisconnectedError):
            await service.label(["走" + "很好" * INLINE_TOKENIZE_CHARS], receive)

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        service.stop(timeout=10)
    assert computed == []  # never submitted to the batcher


# -- model workers ------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 65, True, 1.5, "2", None])
def test_model_workers_out_of_range_is_a_config_error(workers):
    with pytest.raises(ConfigError, match="model_workers"):
        ServerSettings(model_workers=workers)


def test_model_workers_divide_the_cores_unless_the_threads_are_set():
    cores = usable_cores()
    assert ServerSettings().model_workers == 1
    assert engine_config_for(ServerSettings(model_workers=1)).num_threads is None
    assert engine_config_for(ServerSettings(model_workers=2)).num_threads == max(1, cores // 2)
    assert engine_config_for(ServerSettings(model_workers=4 * cores)).num_threads == 1
    kept = ServerSettings(model_workers=2, engine=EngineConfig(num_threads=3))
    assert engine_config_for(kept).num_threads == 3  # then each call has that many
    # A model on a GPU has one worker: more are refused (its staging buffers serve one call).
    assert model_workers_on(ServerSettings(), "cuda:0") == 1
    with pytest.raises(ConfigError, match="model_workers=3: on a GPU"):
        model_workers_on(ServerSettings(model_workers=3), "cuda:0")
    with pytest.raises(ConfigError, match="model_workers=2: on a GPU"):
        ServerSettings(model_workers=2, engine=EngineConfig(device="cuda"))
    assert model_workers_on(ServerSettings(model_workers=3), "cpu") == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_a_service_with_model_workers_labels_as_the_library_does(hf_model_dir, real_reviews, workers):
    """The real service, its batcher running ``workers`` model calls at once on the CPU threads
    divided between them: every request gets its own texts' labels, in order, as the library's."""
    service = SentimentService(ServerSettings(model=str(hf_model_dir), model_workers=workers))
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    assert service.batcher.workers == workers and service.info()["limits"]["model_workers"] == workers
    requests = [real_reviews[i : i + 1 + i % 3] for i in range(120)]

    async def many_clients():
        return await asyncio.gather(*(service.label(texts) for texts in requests))

    try:
        answers = asyncio.run(many_clients())
    finally:
        service.stop(10)
    library = structsent.load(str(hf_model_dir))
    assert [len(a) for a in answers] == [len(texts) for texts in requests]
    for texts, answer in zip(requests, answers):
        alone = library(texts)
        assert [r.label for r in answer] == [r.label for r in alone]
        assert [r.score for r in answer] == pytest.approx([r.score for r in alone], abs=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_client_that_leaves_while_its_batch_computes_stops_the_batch(hf_model_dir, workers):
    """The batch of a client that left was computed to its end, and the next client waited for it
    (two such requests held a server for 80 s); it now stops at its next model call."""
    from structsent.engine import Classifier
    from structsent.server.service import load_classifier
    from structsent.server.statuses import ClientDisconnectedError

    calls = []

    def slow_load(settings):
        loaded = load_classifier(settings)

        class Slow:  # the real runner, 20 ms slower a call
            name, device, precision = loaded.runner.name, loaded.runner.device, loaded.runner.precision

            def run(self, ids, mask):
                calls.append(1)
                time.sleep(0.02)
                return loaded.runner.run(ids, mask)

        return Classifier(loaded.checkpoint, Slow(), loaded.plan.replace(max_batch_size=1))

    service = SentimentService(ServerSettings(model=str(hf_model_dir), model_workers=workers), load=slow_load)
    service.start_loading().join(timeout=120)
    assert service.ready, service.load_error
    warmed = len(calls)

    async def scenario():
        gone = asyncio.Event()

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        leaving = asyncio.create_task(service.label([f"第{i}条评论，味道很好" for i in range(256)], receive))
        while len(calls) == warmed:
            await asyncio.sleep(0.01)
        gone.set()
        with pytest.raises(ClientDisconnectedError):
            await leaving
        began = time.monotonic()
        (next_one,) = await service.label(["还不错"])
        return time.monotonic() - began, next_one

    try:
        waited, next_one = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        service.stop(10)
    assert next_one.ok
    assert waited < 2.5  # (the rest of the batch: 256 calls of 20 ms)
    assert len(calls) - warmed < 128


def test_the_log_line_of_a_model_that_fails_to_load_escapes_its_name(tmp_path, caplog):
    """A model path holding ESC and a line break reached the log as it stands: two lines, the terminal recoloured."""
    from structsent.server.service import SentimentService
    from structsent.server.settings import ServerSettings

    missing = tmp_path / "no\x1b[31m\nmodel"
    service = SentimentService(ServerSettings(model=str(missing)))
    with caplog.at_level("ERROR", logger="structsent.server"):
        service.start_loading().join(timeout=60)
    assert not service.ready and service.load_error is not None
    (line,) = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert "\x1b" not in line and "\n" not in line and "no\\x1b[31m\\nmodel" in line


def test_stop_loading_stops_a_load_in_progress_and_runs_its_cleanups(tmp_path, caplog):
    """A server stopped while its model loads (an ONNX export: seconds): the load is stopped where it
    is, its cleanups run (an export's staging is removed), and it is no load failure."""
    import threading

    staging = tmp_path / "staging"
    started = threading.Event()

    def endless_export(settings):
        staging.mkdir()
        try:
            started.set()
            while True:
                time.sleep(0.01)  # the Python between an export's native calls
        finally:
            staging.rmdir()

    service = SentimentService(ServerSettings(model="default"), load=endless_export)
    loading = service.start_loading()
    assert started.wait(30)
    with caplog.at_level("INFO", logger="structsent.server"):
        assert service.stop_loading(timeout=10)
    assert not loading.is_alive() and not staging.exists()
    assert service.load_error is None and not service.ready
    assert "the model's load stopped: the server is shutting down" in caplog.messages
    assert service.stop_loading(timeout=0)  # no load running: nothing to stop


def test_stop_loading_gives_up_after_its_timeout_while_the_load_is_in_a_native_call():
    """A native call does not see the stop until it returns: the caller decides what to do meanwhile."""
    import threading

    in_native_call, release = threading.Event(), threading.Event()

    def load_in_a_native_call(settings):
        in_native_call.set()
        release.wait(30)  # a lock's wait, in C: as a long tracing or fusion step
        raise AssertionError("the load went on after the stop")

    service = SentimentService(ServerSettings(model="default"), load=load_in_a_native_call)
    loading = service.start_loading()
    assert in_native_call.wait(30)
    try:
        assert not service.stop_loading(timeout=0.3)
    finally:
        release.set()
    loading.join(10)
    assert not loading.is_alive() and service.load_error is None

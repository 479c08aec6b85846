"""The browser page at ``GET /``: served to browsers only, self-contained, locked down by its
Content-Security-Policy, and working in a real browser against a real server with an API key."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from structsent.cli import serve
from structsent.server.app import DOCUMENTATION_PATHS, OPEN_PATHS, create_app
from structsent.server.page import SCRIPT, STYLE, accepts_html
from structsent.server.settings import ServerSettings

from .chromium import EXECUTABLE, MISSING, Chromium
from .conftest import ServerProcess

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
API_KEY = "page-key-5c1d"


def client(**settings) -> TestClient:
    """The real app in process, its model never loaded (no lifespan): enough for the page."""
    return TestClient(create_app(ServerSettings(**settings)))


def sha256(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


# -- the route ------------------------------------------------------------------------------------
def test_a_browser_gets_the_page_under_a_policy_naming_its_own_script_and_style():
    response = client().get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["vary"] == "Accept" and response.headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", response.text, re.DOTALL)
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["script-src"] == f"'{sha256(script)}'" and policy["style-src"] == f"'{sha256(style)}'"
    assert 'id="texts"' in response.text and 'id="run"' in response.text and 'href="docs"' in response.text


def test_the_page_loads_nothing_from_elsewhere():
    page = client().get("/", headers={"Accept": "text/html"}).text
    references = re.findall(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)""", page)
    assert references and all(not re.match(r"[a-z]+:|//", ref) or ref.startswith("data:") for ref in references)
    assert not re.search(r"https?://|@import|url\(", page)
    assert "Noto Sans CJK SC" in STYLE and "Microsoft YaHei" in STYLE  # Chinese renders without a font download


def test_the_script_never_parses_text_as_html():
    """Texts reach the DOM through textContent only (the browser test shows a review with markup)."""
    assert "textContent" in SCRIPT
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "setAttribute(\"style"):
        assert sink not in SCRIPT


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "text/html;q=0", "text/plain, text/htmlx"])
@pytest.mark.parametrize("page", [True, False])
def test_api_clients_get_at_get_root_what_they_got_without_the_page(accept, page):
    headers = {} if accept is None else {"Accept": accept}
    response = client(page=page).get("/", headers=headers)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": "Method Not Allowed: GET /", "error_type": "validation"}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("accept", [BROWSER_ACCEPT, None, "application/json"])
@pytest.mark.parametrize("api_key", [None, API_KEY])
def test_every_answer_at_the_pages_url_varies_on_accept_and_is_revalidated(method, accept, api_key):
    """A shared cache keeps one answer per Accept: without Vary it served the API client's 405 (or
    the 401 of a keyed server) to browsers, and the page to API clients."""
    headers = {} if accept is None else {"Accept": accept}
    response = client(api_key=api_key).request(method, "/", headers=headers)
    assert response.status_code == (200 if accept == BROWSER_ACCEPT else 401 if api_key else 405)
    assert response.headers["vary"] == "Accept" and response.headers["cache-control"] == "no-cache"


def test_without_the_page_get_root_is_not_negotiated():
    response = client(page=False).get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 405 and "vary" not in response.headers


def test_no_page_serves_no_page():
    assert client(page=False).get("/", headers={"Accept": BROWSER_ACCEPT}).status_code == 405


def test_the_page_needs_no_api_key_the_api_does():
    keyed = client(api_key=API_KEY)
    assert keyed.get("/", headers={"Accept": BROWSER_ACCEPT}).status_code == 200
    assert keyed.get("/").status_code == 401  # an API client at GET / still needs the key
    assert keyed.post("/", json={"inputs": "好"}, headers={"Accept": BROWSER_ACCEPT}).status_code == 401
    assert keyed.post("/v1/sentiment", json={"texts": ["好"]}).status_code == 401


def test_with_an_api_key_the_documentation_loads_and_declares_the_key():
    keyed = client(api_key=API_KEY)
    assert keyed.get("/docs").status_code == 200
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "the server's --api-key"}
    assert schema["security"] == [{"apiKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/v1/sentiment"]["post"]  # the document's default: the key
    assert keyed.get("/info").status_code == 401  # the API itself still needs it
    assert "securitySchemes" not in client().get("/openapi.json").json().get("components", {})  # no key, none declared


def test_the_readme_names_exactly_the_routes_open_without_the_key():
    """The README said "every route but /health": the documentation and the page are open too."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    sentence = readme[readme.index("`--api-key KEY`"):].split("```", 1)[0]
    named = set(re.findall(r"`(?:GET |HEAD )?(/[^`\s]*)`", sentence.split(" but ", 1)[1]))
    assert named == OPEN_PATHS | DOCUMENTATION_PATHS | {"/"}
    keyed = client(api_key=API_KEY)
    for path in named:  # answered without the key (/health: 503 here, the model is never loaded)
        assert keyed.get(path, headers={"Accept": BROWSER_ACCEPT}).status_code in (200, 503), path
    assert keyed.get("/").status_code == 401  # the README says so too: an API client's GET / needs it


def test_docs_come_from_the_package_not_a_cdn():
    app = client()
    page = app.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/docs/swagger-ui-bundle.js" in page.text and "/docs/swagger-ui.css" in page.text
    assert "cdn." not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    script, style = app.get("/docs/swagger-ui-bundle.js"), app.get("/docs/swagger-ui.css")
    assert script.headers["content-type"].startswith("text/javascript") and b"SwaggerUIBundle" in script.content
    assert style.headers["content-type"].startswith("text/css") and b".swagger-ui" in style.content
    assert app.get("/redoc").status_code == 404  # its script lives on a CDN: not offered


def test_the_docs_page_is_never_framed_and_its_files_are_not_sniffed():
    """/docs sent none of the page's headers: any site could frame it, Authorize box (the API key) and all."""
    app = client()
    page = app.get("/docs")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    for path in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        assert app.get(path).headers["x-content-type-options"] == "nosniff", path


def test_no_page_flag_reaches_worker_processes():
    import argparse

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert serve.settings_from_args(parser.parse_args([]), environ={}).page is True
    settings = serve.settings_from_args(parser.parse_args(["--no-page"]), environ={})
    assert settings.page is False
    assert ServerSettings.from_json(settings.to_json()).page is False  # --workers N read it from JSON


@pytest.mark.parametrize(
    ("accept", "html"),
    [(BROWSER_ACCEPT, True), ("TEXT/HTML", True), ("text/html; level=1; q=0.5", True), ("text/html;q=0.0", False),
     ("*/*", False), ("application/json", False), ("", False), ("text/*", False),
     # the quality's name in capitals; an API client that takes HTML too but JSON first
     ("text/html;Q=0", False), ("application/json, text/html;q=0.1", False), ("text/html, application/json", True),
     ("application/json;q=0.5, text/html;q=0.9", True),
     # a quality that is none asks for nothing (each was served the page)
     ("text/html;q=-1", False), ("text/html;q=nan", False), ("text/html;q=inf", False), ("text/html;q=abc", False),
     ("text/html;q=1.2.3", False), ("text/html;q=", False), ("text/html;q=1.000", True), ("text/html ; q = 0.5", True)],
)
def test_accepts_html(accept, html):
    assert accepts_html(accept) is html


# -- in a real browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed_server(hf_model_dir):
    process = ServerProcess(hf_model_dir, "--api-key", API_KEY)
    try:
        yield process.wait_healthy()
    finally:
        process.terminate()


READ_RESULTS = """JSON.stringify(Array.from(document.querySelectorAll('#results li.review'), function (li) {
  return { text: li.querySelector('p.text').textContent,
           top: li.querySelector('.bar.top .name').textContent,
           bars: Array.from(li.querySelectorAll('.bar'), function (bar) {
             return [bar.querySelector('.name').textContent, bar.querySelector('.p').textContent]; }) };
}))"""


@pytest.mark.slow
@pytest.mark.skipif(EXECUTABLE is None, reason=MISSING)
def test_typed_reviews_get_the_labels_of_the_api_in_a_real_browser(keyed_server, tmp_path):

    reviews = ["这家店的菜味道很好，下次还会再来。", "<b>送餐太慢</b>，汤都洒了<img src=x>"]
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(keyed_server.url + "/")
        assert browser.evaluate("getComputedStyle(document.getElementById('run')).backgroundColor") == "rgb(42, 157, 143)"
        browser.type("#texts", "\n".join(reviews) + "\n")
        browser.click("#run")  # a real click: the button's handler is what sends the request
        browser.wait_for("document.body.dataset.state === 'error'")
        assert "401" in browser.evaluate("document.getElementById('status').textContent")

        browser.type("#key", API_KEY)
        browser.click("#run")
        browser.wait_for("document.body.dataset.state === 'done'")
        shown = json.loads(browser.evaluate(READ_RESULTS))
        assert "labelled in" in browser.evaluate("document.getElementById('status').textContent")
        assert browser.evaluate("document.querySelector('#results b, #results img')") is None  # shown, not parsed

        # A failed request clears the results it does not answer (they stayed on screen under the error).
        browser.evaluate("document.getElementById('key').value = 'not the key'")
        browser.click("#run")
        browser.wait_for("document.body.dataset.state === 'error'")
        assert browser.evaluate("document.querySelectorAll('#results li').length") == 0

        # A text over the limit is named by the line it was typed on (the API counts the texts sent from 0).
        too_long = "很" * (ServerSettings().max_text_chars + 1)
        browser.evaluate(f"document.getElementById('texts').value = {json.dumps(chr(10).join(['好', '', too_long]))}")
        browser.evaluate(f"document.getElementById('key').value = {json.dumps(API_KEY)}")
        browser.click("#run")
        browser.wait_for("document.body.dataset.state === 'error'")
        assert browser.evaluate("document.getElementById('status').textContent").startswith("413 line 3 has ")

        # A key no server has (not printable ASCII) is said so, not the browser's "non ISO-8859-1 code point".
        browser.evaluate("document.getElementById('key').value = 'clé'")
        browser.click("#run")
        browser.wait_for("document.body.dataset.state === 'error'")
        assert browser.evaluate("document.getElementById('status').textContent").startswith(
            "The API key holds a character other than printable ASCII")

        browser.evaluate(f"document.getElementById('key').value = {json.dumps(API_KEY)}")
        browser.open(keyed_server.url + "/")  # the key survives a reload of the tab
        assert browser.evaluate("document.getElementById('key').value") == API_KEY
    finally:
        browser.close()

    answer = httpx.post(f"{keyed_server.url}/v1/sentiment", json={"texts": reviews},
                        headers={"Authorization": f"Bearer {API_KEY}"}).json()["results"]
    assert [item["text"] for item in shown] == reviews
    for item, result in zip(shown, answer):
        assert item["top"] == result["label"]
        assert [name for name, _ in item["bars"]] == list(result["scores"])
        for (_, percent), probability in zip(item["bars"], result["scores"].values()):
            assert float(percent.rstrip("%")) == pytest.approx(100 * probability, abs=0.051)


@pytest.mark.slow
@pytest.mark.skipif(EXECUTABLE is None, reason=MISSING)
def test_docs_render_offline_and_try_a_call_with_the_key_in_a_real_browser(keyed_server, tmp_path):
    """Swagger UI loads from the server alone, and its Authorize button makes its calls carry the key."""
    browser = Chromium(tmp_path / "profile", height=1400)

    def click(selector: str) -> None:
        browser.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        browser.click(selector)

    info = "#operations-service-info"
    try:
        browser.open(keyed_server.url + "/docs")
        browser.wait_for("document.querySelectorAll('.opblock').length >= 6")
        fetched = browser.evaluate("performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        assert fetched and all(url.startswith(keyed_server.url + "/") for url in fetched), fetched
        click(".btn.authorize")
        browser.wait_for("document.querySelector('.modal-ux input') !== null")
        browser.type(".modal-ux input", API_KEY)
        click(".modal-ux .btn.authorize")
        click(".modal-ux .btn-done")
        click(f"{info} .opblock-summary")
        browser.wait_for(f"document.querySelector('{info} .try-out__btn') !== null")
        click(f"{info} .try-out__btn")
        browser.wait_for(f"document.querySelector('{info} .execute') !== null")
        click(f"{info} .execute")
        statuses = browser.wait_for(
            f"(function () {{ var s = Array.from(document.querySelectorAll('{info} .live-responses-table "
            ".response-col_status'), function (e) { return e.textContent; }); return s.length > 1 && s; })()")
    finally:
        browser.close()
    assert statuses == ["Code", "200"]  # /info needs the key: the call carried it


# Every request the page sends leaves a second late (and is recorded): one is surely in flight meanwhile.
HOLD_REQUESTS = """(function () {
  var send = window.fetch;
  window.sentTexts = [];
  window.fetch = function (url, init) {
    window.sentTexts.push(JSON.parse(init.body).texts);
    return new Promise(function (resolve) { setTimeout(resolve, 1000); }).then(function () { return send(url, init); });
  };
})()"""


def press_ctrl_enter(browser: Chromium, selector: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
    for kind in ("rawKeyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                "windowsVirtualKeyCode": 13, "modifiers": 2})  # 2: Ctrl


@pytest.mark.slow
@pytest.mark.skipif(EXECUTABLE is None, reason=MISSING)
def test_ctrl_enter_while_a_request_is_in_flight_sends_nothing(keyed_server, tmp_path):
    """The shortcut sent a second request while the button was disabled: the first answer then
    replaced the results of the newer text (and named its errors by the other request's lines)."""
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(keyed_server.url + "/")
        browser.evaluate(f"document.getElementById('key').value = {json.dumps(API_KEY)}")
        browser.evaluate(HOLD_REQUESTS)
        browser.type("#texts", "这家店的菜味道很好")
        press_ctrl_enter(browser, "#texts")
        assert browser.evaluate("document.body.dataset.state") == "busy"
        browser.evaluate("document.getElementById('texts').value = '送餐太慢了'")
        press_ctrl_enter(browser, "#texts")  # in flight: nothing
        browser.wait_for("document.body.dataset.state === 'done'")
        assert browser.evaluate("window.sentTexts") == [["这家店的菜味道很好"]]
        assert json.loads(browser.evaluate(READ_RESULTS))[0]["text"] == "这家店的菜味道很好"

        press_ctrl_enter(browser, "#texts")  # answered: the shortcut sends the text now typed
        browser.wait_for("window.sentTexts.length === 2 && document.body.dataset.state === 'done'")
        assert [item["text"] for item in json.loads(browser.evaluate(READ_RESULTS))] == ["送餐太慢了"]
    finally:
        browser.close()

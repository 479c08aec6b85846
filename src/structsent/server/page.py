"""The page a browser gets at ``GET /``: a text box, a button, and each review's label probabilities.

One self-contained HTML document (inline CSS and script, nothing fetched from elsewhere) that
speaks only the public API: ``fetch()`` of ``POST /v1/sentiment``. Every text it shows is set
with ``textContent``, never parsed as HTML, and its Content-Security-Policy lets only its own
script and style (by their SHA-256) run and lets it connect only to this server, so a review
holding ``<script>`` is shown, never executed.

With ``--api-key`` the page is still served without the key (one has to load it to type the
key); the key typed into it stays in the tab's ``sessionStorage`` and goes only into the
``Authorization: Bearer`` header of its requests. Clients that do not ask for HTML (API
clients, probes) are answered at ``GET /`` exactly as without the page.
"""

from __future__ import annotations

import re

from starlette.responses import Response

from ..pages import FONTS, inline_hash

STYLE = """
body { font-family: $FONTS; color: #1f2430; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 860px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } .muted { color: #5d6675; font-size: .92em; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
label.box { display: block; font-weight: 600; margin-bottom: 6px; }
textarea { box-sizing: border-box; width: 100%; font: inherit; padding: 8px; border: 1px solid #c9ced6;
           border-radius: 6px; resize: vertical; }
.tools { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin-top: 10px; }
.tools input { font: inherit; padding: 4px 8px; min-width: 220px; }
button { font: inherit; font-weight: 600; padding: 6px 18px; border: 0; border-radius: 6px; background: #2a9d8f;
         color: #fff; cursor: pointer; }
button:disabled { background: #8a93a2; cursor: wait; }
#status { font-variant-numeric: tabular-nums; } #status.error { color: #b3261e; }
ol { list-style: none; padding: 0; margin: 0; }
li.review { border-top: 1px solid #eceef1; padding: 10px 0; } li.review:first-child { border-top: 0; }
p.text { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
.bar { display: grid; grid-template-columns: 7em 1fr 4.5em; gap: 8px; align-items: center; font-size: .92em; }
.bar .track { background: #eceef1; border-radius: 4px; height: 12px; overflow: hidden; }
.bar .fill { display: block; height: 100%; background: #a9b2bf; }
.bar.top .fill { background: #2a9d8f; } .bar.top .name { font-weight: 600; }
.bar .p { text-align: right; font-variant-numeric: tabular-nums; }
p.flag { margin: 4px 0 0; color: #b3261e; font-size: .92em; }
""".replace("$FONTS", FONTS)

SCRIPT = """
(function () {
  "use strict";
  var KEY_ITEM = "structsent-api-key";
  var texts = document.getElementById("texts"), key = document.getElementById("key");
  var button = document.getElementById("run"), status = document.getElementById("status");
  var list = document.getElementById("results");

  key.value = sessionStorage.getItem(KEY_ITEM) || "";
  key.addEventListener("input", function () {
    if (key.value) { sessionStorage.setItem(KEY_ITEM, key.value); } else { sessionStorage.removeItem(KEY_ITEM); }
  });

  // Every text goes in through textContent: nothing the user or the server sends is parsed as HTML.
  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function percent(p) { return (100 * p).toFixed(1) + "%"; }

  function review(text, result) {
    var item = element("li", "review");
    item.appendChild(element("p", "text", text));
    if (result.error !== null) {
      item.appendChild(element("p", "flag", "not labelled: " + result.error));
      return item;
    }
    Object.keys(result.scores).forEach(function (label) {
      var p = result.scores[label];
      var row = element("div", label === result.label ? "bar top" : "bar");
      var track = element("span", "track"), fill = element("span", "fill");
      fill.style.width = percent(p);  // CSSOM, which the policy allows (a style attribute it would not)
      track.appendChild(fill);
      row.appendChild(element("span", "name", label));
      row.appendChild(track);
      row.appendChild(element("span", "p", percent(p)));
      item.appendChild(row);
    });
    if (result.truncated) { item.appendChild(element("p", "flag", "cut to the model's max_length")); }
    return item;
  }

  function finish(state, message) {
    if (state === "error") { list.replaceChildren(); }  // earlier results do not answer this request
    status.textContent = message;
    status.className = state === "error" ? "error" : "";
    document.body.setAttribute("data-state", state);
    button.disabled = false;
  }

  // The number of the last request sent: only its answer is shown (one is in flight at a time).
  var latest = 0;

  function failure(response, body, lineNumbers) {
    // The API counts the texts sent from 0; the page names the line one typed it on.
    var error = body && body.error ? String(body.error).replace(/^text (\\d+) /, function (whole, index) {
      return lineNumbers[+index] ? "line " + lineNumbers[+index] + " " : whole;
    }) : response.statusText;
    var message = response.status + " " + error;
    if (response.status === 401) { message += " (type the server's API key above)"; }
    return message;
  }

  function labelReviews() {
    // Ctrl+Enter while a request is in flight would send a second one, whose text the earlier
    // answer then replaced; the button is disabled, and so is the shortcut.
    if (button.disabled) { return; }
    var reviews = [], lineNumbers = [];  // lineNumbers: the textarea's line of each review sent, from 1
    texts.value.split(/\\r?\\n/).forEach(function (line, i) {
      if (line.trim() !== "") { reviews.push(line); lineNumbers.push(i + 1); }
    });
    if (!reviews.length) { finish("error", "Type at least one review, one per line."); return; }
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    // A server's key is printable ASCII; the browser refused any other character with its own error.
    if (/[^\x21-\x7e]/.test(key.value)) {
      finish("error", "The API key holds a character other than printable ASCII (a space, an accented letter): "
        + "a server's key never does; type it again.");
      return;
    }
    if (key.value) { headers.Authorization = "Bearer " + key.value; }
    button.disabled = true;
    document.body.setAttribute("data-state", "busy");
    status.className = "";
    status.textContent = "Labelling " + reviews.length + " review(s)...";
    var started = performance.now(), request = ++latest;
    fetch("v1/sentiment", { method: "POST", headers: headers, body: JSON.stringify({ texts: reviews }) })
      .then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          var ms = performance.now() - started;
          if (request !== latest) { return; }  // an older request's answer: it does not answer the text shown
          if (!response.ok || !body) { finish("error", failure(response, body, lineNumbers)); return; }
          list.replaceChildren.apply(list, body.results.map(function (result, i) { return review(reviews[i], result); }));
          finish("done", reviews.length + " review(s) labelled in " + ms.toFixed(0) + " ms (one POST /v1/sentiment)");
        });
      })
      .catch(function (err) { if (request === latest) { finish("error", "request failed: " + err.message); } });
  }

  button.addEventListener("click", labelReviews);
  texts.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { labelReviews(); }
  });
})();
"""

BODY = """<main>
<h1>structsent</h1>
<p class="muted">Chinese sentiment labels from this server's model, through its public API
(<code>POST /v1/sentiment</code>). <a href="docs">API documentation (OpenAPI)</a></p>
<section>
<label class="box" for="texts">Reviews, one per line</label>
<textarea id="texts" rows="6" lang="zh" spellcheck="false"
 placeholder="这家店的菜味道很好，下次还会再来。&#10;送餐太慢了，汤都洒了。"></textarea>
<div class="tools">
<button id="run" type="button">Label</button>
<label>API key <input id="key" type="password" autocomplete="off" placeholder="if the server has one"></label>
<span id="status" role="status" aria-live="polite"></span>
</div>
</section>
<section><ol id="results" lang="zh"></ol></section>
<p class="muted">An API key typed here stays in this browser tab (sessionStorage) and is sent only
to this server, as <code>Authorization: Bearer</code>. This page loads nothing from elsewhere.</p>
</main>"""


CSP = (f"default-src 'none'; script-src {inline_hash(SCRIPT)}; style-src {inline_hash(STYLE)}; "
       "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<link rel="icon" href="data:,">\n'  # no /favicon.ico request
    f"<title>structsent</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{BODY}\n"
    f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
).encode()

PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Vary": "Accept",  # the same URL answers API clients differently
}

_MEDIA_RANGE = re.compile(r"\s*([^;,\s]+)\s*((?:;[^,]*)?)")
_QUALITY = re.compile(r";\s*q\s*=\s*([^;]*?)\s*(?:;|$)", re.IGNORECASE)
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110, 12.4.2: 0 to 1, three decimals at most


def accepts_html(accept: str) -> bool:
    """Whether an Accept header asks for text/html (what browsers send for a page) at least as much
    as for JSON; ``*/*`` alone does not: curl and API clients send it."""
    html, json = _quality(accept, "text/html"), _quality(accept, "application/json")
    return html > 0 and html >= json


def _quality(accept: str, media_type: str) -> float:
    """The highest quality the header gives ``media_type`` named as itself (0 when it is not named)."""
    best = 0.0
    for part in accept.split(","):
        match = _MEDIA_RANGE.match(part)
        if match and match.group(1).lower() == media_type:
            quality = _QUALITY.search(match.group(2))
            best = max(best, _qvalue(quality.group(1)) if quality else 1.0)
    return best


def _qvalue(text: str) -> float:
    """A quality as the header gives it; one that is none ("-1", "nan", "1.5", "abc") asks for nothing
    (0): "q=-1" meant no HTML, and was served the page."""
    return float(text) if _QVALUE.fullmatch(text) else 0.0


# What every answer at the page's URL carries, page or not: a shared cache keeps one answer per
# Accept (else it could serve an API client's 405 to browsers), and revalidates each as the page.
NEGOTIATED_HEADERS = {"Vary": "Accept", "Cache-Control": PAGE_HEADERS["Cache-Control"]}


class BrowserPage:
    """Answers ``GET /`` (and HEAD) with the page when the client accepts HTML; passes every other
    request on, those at ``GET /`` with ``NEGOTIATED_HEADERS`` added to their answer (a 405, a 401).
    It sits outside ``BearerAuth``: the page holds no data, and one types the key in it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
        elif accepts_html(_accept(scope["headers"])):
            response = Response(PAGE, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, _adding_negotiated_headers(send))


def _adding_negotiated_headers(send):
    """``send``, adding to the response's headers each of ``NEGOTIATED_HEADERS`` it lacks."""

    async def send_negotiated(message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [(name.lower().encode(), value.encode()) for name, value in NEGOTIATED_HEADERS.items()
                        if name.lower().encode() not in present]
            message = {**message, "headers": headers}
        await send(message)

    return send_negotiated


def _accept(headers) -> str:
    return ", ".join(value.decode("latin-1") for name, value in headers if name == b"accept")

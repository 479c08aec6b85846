"""Headless Chromium driven through the DevTools protocol, with the standard library only.

``--remote-debugging-pipe`` makes the browser read JSON commands from file descriptor 3 and write
replies and events to descriptor 4, each message ended by a NUL byte: no websocket needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

EXECUTABLE = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
MISSING = "no chromium on PATH (Debian: apt-get install chromium fonts-noto-cjk)"


class Chromium:
    """One headless browser with one page; ``evaluate`` runs JavaScript in it, the input methods
    send real key and mouse events (the page's handlers run as for a user)."""

    def __init__(self, profile: Path, *, width: int = 1000, height: int = 900, timeout: float = 30) -> None:
        self.timeout = timeout
        child_reads, self._commands = os.pipe()
        self._replies, child_writes = os.pipe()
        # Above 4, so that moving them onto 3 and 4 in the child cannot overwrite one another.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (child_reads, child_writes)]
        for fd in (child_reads, child_writes):
            os.close(fd)

        def onto_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [EXECUTABLE, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=onto_3_and_4,  # noqa: PLW1509 - two dup2 calls only, safe after fork
        )
        for fd in high:
            os.close(fd)
        self._buffer, self._last_id, self._session = b"", 0, None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    # -- the protocol -------------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if self._session is not None:
            message["sessionId"] = self._session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data):]
        while True:
            reply = self._receive()
            if reply.get("id") == self._last_id:  # anything else is an event: not needed here
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise ConnectionError("chromium closed its pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    # -- a page -------------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str):
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, condition: str, timeout: float | None = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(condition)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"never true: {condition}")

    def type(self, selector: str, text: str) -> None:
        """Focus ``selector`` and type ``text``; a newline is a press of Enter."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        for index, line in enumerate(text.split("\n")):
            if index:
                for kind in ("keyDown", "keyUp"):
                    self.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                         "windowsVirtualKeyCode": 13, "text": "\r"})
            if line:
                self.send("Input.insertText", {"text": line})

    def click(self, selector: str) -> None:
        """A left click in the middle of ``selector``, as a mouse gives it."""
        x, y = self.evaluate(
            f"(function () {{ var r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        self._session = None  # Browser.close is a command of the browser, not of the page
        try:
            self.send("Browser.close")
            self.process.wait(10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)
        finally:
            os.close(self._commands)
            os.close(self._replies)

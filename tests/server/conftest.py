"""Real `structsent serve` processes on free loopback ports, started once per module."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

FAULT_SERVER = Path(__file__).with_name("fault_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server subprocess: start, wait for /health, read metrics, stop with SIGTERM."""

    def __init__(
        self,
        model_dir: Path,
        *extra: str,
        fault_load_delay_s: float | None = None,
        env: dict[str, str] | None = None,
        preexec_fn=None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        serve = ["serve", "--model", str(model_dir), "--port", str(self.port), "--log-level", "warning", *extra]
        if fault_load_delay_s is None:
            command = [sys.executable, "-m", "structsent", *serve]
        else:
            command = [sys.executable, str(FAULT_SERVER), str(fault_load_delay_s), *serve]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"structsent-server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"server not listening after {timeout} s: {self.log()}")

    def wait_healthy(self, timeout: float = 60) -> "ServerProcess":
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get("/health").status_code == 200:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"server not healthy after {timeout} s: {self.log()}")

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        return parse_metrics(self.client.get("/metrics").text)

    def log_text(self) -> str:
        """The whole log so far (``log`` gives its end)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log(self) -> str:
        if self._log.closed:
            return self._log_tail
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.client.close()
        if not self._log.closed:
            self._log_tail = self.log()
            self._log.close()
            self.log_path.unlink(missing_ok=True)


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus exposition as {'name{labels}': value}."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent); labels must match exactly those given."""
    for key, value in samples.items():
        match = re.fullmatch(r"([^{]+)(?:\{(.*)\})?", key)
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if match.group(1) == name and found == labels:
            return value
    return 0.0


@pytest.fixture(scope="module")
def server(hf_model_dir):
    """The everyday server: small limits so every limit is cheap to hit, 50 ms merge window."""
    process = ServerProcess(
        hf_model_dir,
        "--max-wait-ms", "50",
        "--max-texts", "8",
        "--max-text-chars", "400",
        "--max-body-bytes", "4096",
        "--max-length", "258",
        "--max-queue", "64",
    )
    try:
        yield process.wait_healthy()
    finally:
        process.terminate()

"""`structsent serve` flags -> ServerSettings: the API key, the connection limits."""

from __future__ import annotations

import gc
import resource
import socket
import subprocess
import sys

import pytest

from structsent.cli import build_parser, main
from structsent.cli.serve import check_process_flags, settings_from_args
from structsent.errors import ConfigError
from structsent.server.service import SentimentService
from structsent.server.settings import ServerSettings

from ..conftest import run_structsent
from ..server.conftest import free_port


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", *flags])


def test_the_api_key_comes_from_the_flag_else_the_environment():
    assert settings_from_args(serve_args(), environ={}).api_key is None
    assert settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": "from-env"}).api_key == "from-env"
    flagged = settings_from_args(serve_args("--api-key", "from-flag"), environ={"STRUCTSENT_API_KEY": "from-env"})
    assert flagged.api_key == "from-flag"
    with pytest.raises(ConfigError, match="empty"):
        settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": ""})


def test_an_api_key_from_a_secret_file_loses_its_trailing_newline():
    """No client can send a header value ending in a newline: such a key refused every request."""
    assert settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": "s3cret\n"}).api_key == "s3cret"
    assert settings_from_args(serve_args("--api-key", " s3cret\r\n"), environ={}).api_key == "s3cret"
    with pytest.raises(ConfigError, match="empty"):
        settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": "\n"})


@pytest.mark.parametrize("key", ["café", "ключ", "two words", "line\nbreak", "tab\tkey", "nul\x00"])
def test_an_api_key_no_client_could_send_is_refused_at_start(key):
    """Clients send header values in Latin-1 or UTF-8, browsers refuse what Latin-1 lacks."""
    with pytest.raises(ConfigError, match="printable ASCII without spaces"):
        settings_from_args(serve_args("--api-key", key), environ={})
    assert settings_from_args(serve_args("--api-key", "A-z_0.9~+/="), environ={}).api_key == "A-z_0.9~+/="


def test_the_api_key_reaches_workers_but_not_info_nor_repr():
    settings = settings_from_args(serve_args("--api-key", "s3cret-key", "--max-connections", "9"), environ={})
    assert ServerSettings.from_json(settings.to_json()) == settings  # worker processes get it
    assert "s3cret-key" not in repr(settings)
    info = SentimentService(settings).info()
    assert "s3cret-key" not in repr(info)
    assert info["limits"]["max_connections"] == 9 and info["limits"]["read_timeout_s"] == 10


@pytest.mark.parametrize(
    "flags", [("--max-connections", "0"), ("--read-timeout-s", "0"), ("--max-header-bytes", "0")]
)
def test_limits_that_cannot_work_are_refused(flags):
    with pytest.raises(ConfigError):
        settings_from_args(serve_args(*flags), environ={})


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-wait-ms", "inf"), ("--max-wait-ms", "nan"), ("--max-wait-ms=-1",), ("--max-wait-ms", "1e12"),
        ("--read-timeout-s", "inf"), ("--read-timeout-s", "nan"), ("--read-timeout-s=-inf",),
    ],
)
def test_non_finite_or_out_of_range_durations_are_refused(flags):
    with pytest.raises(ConfigError, match=flags[0].split("=")[0].lstrip("-").replace("-", "_")):
        settings_from_args(serve_args(*flags), environ={})


def test_durations_at_their_bounds_are_accepted():
    settings = settings_from_args(serve_args("--max-wait-ms", "60000", "--read-timeout-s", "0.5"), environ={})
    assert settings.max_wait_ms == 60000 and settings.read_timeout_s == 0.5
    check_process_flags(serve_args("--port", "0", "--graceful-timeout", "0"))
    check_process_flags(serve_args("--port", "65535"))
    check_process_flags(serve_args("--workers", "64"))


@pytest.mark.parametrize(
    "flags",
    [
        ("--port", "65536"), ("--port", "99999"), ("--port=-1",),
        ("--graceful-timeout", "inf"), ("--graceful-timeout", "nan"), ("--graceful-timeout=-1",),
        ("--workers", "0"), ("--workers", "65"),
    ],
)
def test_process_flags_out_of_range_are_refused(flags):
    with pytest.raises(ConfigError, match=flags[0].split("=")[0]):
        check_process_flags(serve_args(*flags))


@pytest.mark.parametrize("flags", [("--max-wait-ms", "inf"), ("--port", "65537")])
def test_a_bad_value_stops_serve_with_one_line_and_exit_code_2(flags):
    done = run_structsent("serve", "--port", free_port(), *flags, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "structsent: error:" in done.stderr
    assert flags[1] in done.stderr


def test_too_many_server_processes_are_refused_before_any_starts(monkeypatch, capsys):
    """--workers had no upper bound (--model-workers has one): 10000 processes, each loading its model."""
    def started(*args, **kwargs):
        raise AssertionError("the command went on to start processes")

    monkeypatch.setattr("structsent.server.workers.check_model_loads", started)
    monkeypatch.setattr("structsent.cli.serve._serve_processes", started)
    assert main(["serve", "--port", "0", "--workers", "10000"]) == 2
    assert capsys.readouterr().err == "structsent: error: --workers 10000: must be in 1..64 (each process loads its own model)\n"


def test_a_connection_cap_beyond_the_open_file_limit_is_refused_before_loading():
    def small_file_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(
        [sys.executable, "-m", "structsent", "serve", "--max-connections", "1000"],
        capture_output=True, text=True, timeout=60, preexec_fn=small_file_limit,
    )
    assert done.returncode == 2
    assert "--max-connections 1000" in done.stderr and "ulimit -n" in done.stderr
    assert "Traceback" not in done.stderr



def test_an_address_it_cannot_listen_on_is_refused_before_the_model_loads(tmp_path):
    """A port in use or a host that does not resolve: uvicorn's log line after the model had
    loaded, and the exit status of a broken model (3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flags, says in ((["--port", port], f"--port {port}: cannot listen there"),
                            (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address")):
            done = run_structsent("serve", "--model", str(tmp_path / "missing"), *flags, text=True, timeout=60)
            assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_a_model_that_cannot_load_stops_serve_with_one_line_with_several_workers_too(tmp_path):
    """With --workers 2 each worker failed to load it and answered 503 for ever; with one, the
    error line came after a traceback, and later after uvicorn's lines of a server that listened."""
    for workers in ("1", "2"):
        done = run_structsent("serve", "--model", str(tmp_path / "missing"), "--port", free_port(),
                              "--workers", workers, text=True, timeout=120)
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr and "structsent: error:" in done.stderr
        assert "no such model directory" in done.stderr.splitlines()[-1]
        # Before it listens: one process listened, said "Uvicorn running on ...", then stopped.
        assert "Uvicorn running" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("flags, says", [(["--token-budget", "100"], "--token-budget 100: must be at least max_length"),
                                         (["--device", "cuda"], "CUDA is not available"),
                                         (["--backend", "onnx", "--attention", "packed"], "--attention packed runs with"),
                                         (["--backend", "onnx", "--precision", "fp16"], "fp16")])
def test_a_model_that_cannot_run_as_asked_stops_serve_with_several_workers_too(flags, says):
    """The check before the workers read the checkpoint only: a token budget, device or precision
    the model cannot run with left two workers answering 503 for ever, where one worker exits 2."""
    for workers in ("1", "2"):
        done = run_structsent("serve", "--port", free_port(), "--workers", workers, *flags, text=True, timeout=120)
        assert done.returncode == 2, (workers, done.stderr)
        assert "Traceback" not in done.stderr and says in done.stderr.splitlines()[-1], (workers, done.stderr)
        # Before it listens (one worker listened, said "Uvicorn running on ...", then stopped).
        assert "Uvicorn running" not in done.stderr and done.stderr.count("\n") == 1, (workers, done.stderr)


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_the_check_before_the_workers_stops_it_at_once(tmp_path, signum, code):
    """The check loads the model as a worker does (an ONNX export into an empty cache: seconds);
    Ctrl-C or SIGTERM to `serve` waited for the whole load before the command stopped."""
    import os
    import signal
    import time

    from ..conftest import children_of, is_running

    env = {**os.environ, "STRUCTSENT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "structsent", "serve", "--port", str(free_port()), "--workers",
                             "2", "--backend", "onnx"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline, checking = time.time() + 60, []
        while not checking and time.time() < deadline and proc.poll() is None:
            checking = children_of(proc.pid, running="multiprocessing")
            time.sleep(0.05)
        time.sleep(1.0)  # into the load: the cache is still being filled
        assert checking and proc.poll() is None, "no check running to stop: the test proves nothing"
        sent = time.monotonic()
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err.decode()
    assert took < 3, f"stopped {took:.1f} s after the signal"
    time.sleep(0.5)
    assert not any(is_running(pid) for pid in checking), "the check's process outlived the command"


@pytest.mark.slow
@pytest.mark.parametrize("into_export_s", [0.0, 1.0])
@pytest.mark.parametrize("signum, code", [("SIGTERM", 0), ("SIGINT", 130)])
def test_a_signal_during_the_export_of_a_lone_server_ends_it_cleanly(tmp_path, signum, code, into_export_s):
    """A lone server exports its model into an empty ONNX cache in a background thread while it
    answers 503; a stop then ended the process through the interpreter's finalisation with the export
    in native code: "terminate called without an active exception" and SIGABRT in 3 tries of 4, and
    when it did exit, the export's staging left in the cache and its scratch in the temporary directory."""
    pytest.importorskip("onnxruntime")
    import os
    import signal
    import time

    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    scratch.mkdir()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "STRUCTSENT_CACHE": str(cache), "TMPDIR": str(scratch)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "structsent", "serve", "--port", str(free_port()),
                                 "--backend", "onnx"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, staging = time.time() + 120, []
        while not staging and time.time() < deadline and proc.poll() is None:
            staging = list((cache / "onnx").glob(".export-*")) if (cache / "onnx").is_dir() else []
            time.sleep(0.02)
        assert staging and proc.poll() is None, f"no export running to stop: {log_path.read_text()}"
        time.sleep(into_export_s)
        proc.send_signal(getattr(signal, signum))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log_path.read_text(errors="replace")
    assert "exported it" not in said, "the export ended before the signal: the test proves nothing"
    assert proc.returncode == code, said
    assert "terminate called" not in said and "Traceback" not in said, said
    if signum == "SIGINT":
        assert said.strip().splitlines()[-1] == "structsent: interrupted"
    assert list((cache / "onnx").iterdir()) == [], "a partial export was left in the cache"
    assert list(scratch.glob("structsent-export-*")) == [], "the export's scratch was left behind"


def test_the_service_freezes_its_startup_objects_once_warm(hf_model_dir):
    assert gc.get_freeze_count() == 0
    service = SentimentService(ServerSettings(model=str(hf_model_dir)))
    service.start_loading().join(timeout=120)
    try:
        assert service.ready, service.load_error
        assert gc.get_freeze_count() > 0
        assert not any(o is service.classifier for o in gc.get_objects())  # no longer walked by collections
    finally:
        service.stop(timeout=10)


ADDRESS_TAKEN_AFTER_THE_CHECK = """
import sys
import structsent.cli.serve as serve
from structsent.cli import main

real, calls = serve.check_listen_address, []

def passes_first(*args, **kwargs):  # as when another server binds between the check and uvicorn's bind
    calls.append(1)
    return None if len(calls) == 1 else real(*args, **kwargs)

serve.check_listen_address = passes_first
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_address_taken_after_the_check_is_exit_2_with_its_reason(hf_model_dir, workers):
    """Two servers started at once on one port: the one that lost the bind exited 3 (the status of a
    model that cannot load) with uvicorn's log line alone."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-c", ADDRESS_TAKEN_AFTER_THE_CHECK, "serve", "--model", str(hf_model_dir),
                               "--port", str(port), "--workers", workers, "--log-level", "warning"],
                              capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"structsent: error: --host 127.0.0.1 --port {port}: "
                                                           "cannot listen there (Address already in use)")
    assert "Traceback" not in proc.stderr


def test_model_workers_flag():
    assert settings_from_args(serve_args(), environ={}).model_workers == 1
    assert settings_from_args(serve_args("--model-workers", "3"), environ={}).model_workers == 3
    with pytest.raises(ConfigError, match="model_workers=0"):
        settings_from_args(serve_args("--model-workers", "0"), environ={})


_LOAD_THAT_DOES_NOT_STOP = """
import logging, os, signal, sys, threading
from pathlib import Path
from structsent.cli import serve
from structsent.onnx.cache import STAGING_PREFIX, cache_root
from structsent.server.service import SentimentService
from structsent.server.settings import ServerSettings
from structsent.staging import staging_name

logging.basicConfig(level=logging.WARNING, format="%(message)s")
serve.LOAD_STOP_S = float(sys.argv[1])
staging = cache_root() / "onnx" / (staging_name(STAGING_PREFIX) + "entry")
staging.mkdir(parents=True)
(staging / "model.onnx").write_bytes(b"half an export")
in_native_call = threading.Event()

def load_in_a_native_call(settings):
    in_native_call.set()
    threading.Event().wait()  # a lock's wait, in C, for ever: as a long fusion step of an export

service = SentimentService(ServerSettings(model="default"), load=load_in_a_native_call)
service.start_loading()
in_native_call.wait(30)
if sys.argv[2] == "second signal":
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
print("ending the load", flush=True)
serve.end_the_load(service, exit_status=0)
print("end_the_load returned", flush=True)
"""


@pytest.mark.parametrize("case, code, farewell", [("wait", 0, None), ("second signal", 130, "structsent: interrupted")])
def test_a_load_that_does_not_stop_in_time_ends_the_process_with_its_staging_removed(tmp_path, case, code, farewell):
    """The load stop's fallback: a load still in native code after LOAD_STOP_S (here 1 s, or a
    second Ctrl-C half a second into the wait) ends the process at once, without the interpreter's
    finalisation, with this process's export staging removed and its own exit status."""
    import os

    cache = tmp_path / "cache"
    environment = {**os.environ, "STRUCTSENT_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", _LOAD_THAT_DOES_NOT_STOP, "1.0", case], env=environment,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert "ending the load" in done.stdout and "end_the_load returned" not in done.stdout
    assert not list((cache / "onnx").iterdir())  # the staging directory is gone
    if farewell is None:
        assert "the model's load did not stop within 1 s; exiting without waiting for it" in done.stderr
    else:
        assert done.stderr.strip().splitlines()[-1] == farewell
        assert "did not stop within" not in done.stderr
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr

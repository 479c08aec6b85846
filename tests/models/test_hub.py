"""Hub ids: a hub that never answers fails in bounded time with the same one-line instructions as offline."""

import contextlib
import socket
import threading
import time

import pytest

from ..conftest import run_structsent

HUB_ID = "damo/nlp_structbert_sentiment-classification_chinese-base"


@contextlib.contextmanager
def black_hole():
    """A listener on a loopback port that accepts every connection and never answers (a proxy that
    swallows requests): the address, as a proxy URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def hub_environment(proxy: str, timeout: str) -> dict[str, str]:
    return {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
            "NO_PROXY": "", "no_proxy": "", "STRUCTSENT_HUB_TIMEOUT": timeout}


def test_a_hub_that_never_answers_fails_within_the_timeout_in_one_line(tmp_path):
    """A proxy that accepts and never answers kept huggingface_hub's lookup waiting for ever."""
    pytest.importorskip("huggingface_hub")
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    with black_hole() as proxy:
        started = time.monotonic()
        proc = run_structsent("label", source, "--model", HUB_ID, "-o", tmp_path / "out.jsonl", text=True,
                              timeout=60, env=hub_environment(proxy, "2"))
        seconds = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no answer from the hub within 2 s (STRUCTSENT_HUB_TIMEOUT)" in lines[0], proc.stderr
    assert f"modelscope download --model {HUB_ID}" in lines[0]
    assert seconds < 30


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", "３０", "٣", "1_0"])
def test_a_hub_timeout_that_is_not_a_positive_number_of_seconds_is_a_config_error(monkeypatch, value):
    from structsent.errors import ConfigError
    from structsent.models.hub import hub_timeout

    monkeypatch.setenv("STRUCTSENT_HUB_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"STRUCTSENT_HUB_TIMEOUT={value!r}: expected a number of seconds"):
        hub_timeout()


def test_the_hub_timeout_defaults_to_30_seconds(monkeypatch):
    from structsent.models.hub import hub_timeout

    monkeypatch.delenv("STRUCTSENT_HUB_TIMEOUT", raising=False)
    assert hub_timeout() == 30
    monkeypatch.setenv("STRUCTSENT_HUB_TIMEOUT", " 2.5 ")
    assert hub_timeout() == 2.5


def test_offline_still_fails_at_once(tmp_path):
    """No network at all (nothing listens where the proxy points): the clear message, in well under the
    timeout. (In a process of its own: huggingface_hub keeps the HTTP client, and so the proxy, it made.)"""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    started = time.monotonic()
    proc = run_structsent("label", source, "--model", HUB_ID, "-o", tmp_path / "out.jsonl", text=True, timeout=60,
                          env=hub_environment(f"http://127.0.0.1:{port}", "30"))
    assert proc.returncode == 3 and "could not be downloaded" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 20


def test_a_hub_that_never_answers_leaves_a_copy_in_the_local_hub_cache_in_use_as_offline(tmp_path, hf_model_dir):
    """The lookup's deadline raised at once: a checkpoint already in the Hugging Face cache, which an
    offline machine uses, was not tried ("could not be downloaded", exit 3)."""
    pytest.importorskip("huggingface_hub")
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hf" / "hub" / "models--someorg--tinycached"
    shutil.copytree(hf_model_dir, cached / "snapshots" / revision)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(revision)
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    with black_hole() as proxy:
        proc = run_structsent("label", source, "--model", "someorg/tinycached", "-o", tmp_path / "out.jsonl", "-q",
                              text=True, timeout=60, env={**hub_environment(proxy, "1"), "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    assert '"text": "好评"' in (tmp_path / "out.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["a/..", "a/.", "./a", "a/b..c"])
def test_a_path_that_is_not_there_is_not_asked_of_the_hub(tmp_path, name):
    """`--model a/..` (no directory a) was looked up on the hubs: the message advised `modelscope
    download --model a/..` and quoted huggingface's HFValidationError."""
    import structsent
    from structsent.models.hub import looks_like_hub_id

    assert not looks_like_hub_id(name) and looks_like_hub_id("damo/nlp_structbert.v1-base")
    with pytest.raises(structsent.ModelNotFoundError) as caught:
        structsent.load(str(tmp_path / "missing" / name) if name.startswith(".") else name)
    assert "no such model directory" in str(caught.value) and "download" not in str(caught.value)


def test_a_blank_timeout_variable_is_refused_as_a_blank_engine_variable_is(tmp_path, monkeypatch):
    """STRUCTSENT_HUB_TIMEOUT= was taken as unset (30 s), where STRUCTSENT_DEVICE= is refused naming the variable."""
    import structsent
    from structsent.models.hub import hub_timeout

    monkeypatch.setenv("STRUCTSENT_HUB_TIMEOUT", "")
    with pytest.raises(structsent.ConfigError, match="^STRUCTSENT_HUB_TIMEOUT='': expected a number of seconds"):
        hub_timeout()
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    proc = run_structsent("label", source, "--model", HUB_ID, "-o", tmp_path / "out.jsonl", text=True,
                          env={"STRUCTSENT_HUB_TIMEOUT": ""})
    assert (proc.returncode, proc.stderr) == (
        2, "structsent: error: STRUCTSENT_HUB_TIMEOUT='': expected a number of seconds greater than 0, e.g. 30\n")

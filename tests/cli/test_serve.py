"""`structsent serve` flags -> ServerSettings: the API key, the connection limits."""

from __future__ import annotations

import gc
import resource
import subprocess
import sys

import pytest

from structsent.cli import build_parser
from structsent.cli.serve import settings_from_args
from structsent.errors import ConfigError
from structsent.server.app import SentimentService, ServerSettings


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", *flags])


def test_the_api_key_comes_from_the_flag_else_the_environment():
    assert settings_from_args(serve_args(), environ={}).api_key is None
    assert settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": "from-env"}).api_key == "from-env"
    flagged = settings_from_args(serve_args("--api-key", "from-flag"), environ={"STRUCTSENT_API_KEY": "from-env"})
    assert flagged.api_key == "from-flag"
    with pytest.raises(ConfigError, match="empty"):
        settings_from_args(serve_args(), environ={"STRUCTSENT_API_KEY": ""})


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

"""structsent.config: EngineConfig refuses, when built, every value that cannot work."""

import math

import pytest

from structsent.config import MAX_THREADS, EngineConfig
from structsent.errors import ConfigError


@pytest.mark.parametrize("changes", [
    {"token_budget": math.nan}, {"token_budget": math.inf}, {"token_budget": 4096.5}, {"token_budget": 4096.0},
    {"token_budget": "4096"}, {"max_batch_size": math.nan}, {"pad_multiple": math.nan},
    {"batch_overhead_tokens": math.nan}, {"num_threads": True}, {"num_threads": 1.5}, {"max_length": math.inf},
    {"max_length": True}, {"window_stride": 2.0},
])
def test_an_integer_setting_must_be_a_real_int(changes):
    (name, value), = changes.items()
    with pytest.raises(ConfigError, match=rf"^{name}={value!r}: expected an integer in \d+\.\.\d+$"):
        EngineConfig(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"num_threads": 10**6}, "num_threads=1000000: must be in 0..1024"),
    ({"num_threads": 2**31}, "num_threads=2147483648: must be in 0..1024"),
    ({"num_threads": -1}, "num_threads=-1: must be in 0..1024"),
    ({"max_batch_size": 0}, "max_batch_size=0: must be in 1..2147483647"),
    ({"token_budget": 2**31}, "token_budget=2147483648: must be in 3..2147483647"),
    ({"max_length": 2}, "max_length=2: must be in 3..2147483647"),
    ({"device": None}, "device=None: expected one of auto, cpu, cuda, cuda:N"),
    ({"device": 0}, "device=0: expected one of auto, cpu, cuda, cuda:N"),
    ({"device": "cuda:１"}, "device='cuda:１': expected one of auto, cpu, cuda, cuda:N"),  # torch: "Invalid device string"
    ({"backend": None}, "backend=None: expected one of auto, torch, onnx"),
    ({"attention": ["padded"]}, "attention=['padded']: expected one of auto, padded, packed"),
])
def test_out_of_range_or_mistyped_values_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError) as caught:
        EngineConfig(**changes)
    assert str(caught.value) == message


def test_valid_integers_are_kept_and_zero_threads_means_the_runtimes_own():
    config = EngineConfig(num_threads=0, token_budget=4096, max_batch_size=1, pad_multiple=8,
                          batch_overhead_tokens=0, max_length=128)
    assert (config.num_threads, config.token_budget, config.window_stride) == (0, 4096, None)  # the plan's half window
    assert EngineConfig(num_threads=MAX_THREADS).num_threads == MAX_THREADS
    assert EngineConfig(backend="onnx").backend.value == "onnx"


def test_numpy_integers_are_taken_as_plain_ints():
    import json

    import numpy as np

    config = EngineConfig(max_batch_size=np.int64(64), num_threads=np.int32(2), max_length=np.int16(128))
    assert (config.max_batch_size, config.num_threads, config.max_length) == (64, 2, 128)
    assert all(type(v) is int for v in (config.max_batch_size, config.num_threads, config.max_length))
    json.dumps(config.max_batch_size)  # plain ints: the settings are shown as JSON (/info, manifests)
    with pytest.raises(ConfigError, match="must be in 0..1024"):
        EngineConfig(num_threads=np.int64(4096))


def test_engine_flags_and_variables_reach_the_same_checks(monkeypatch):
    from structsent.cli import build_parser
    from structsent.cli.engine_flags import engine_config

    with pytest.raises(ConfigError, match=r"^num_threads=2147483648: must be in 0\.\.1024$"):
        engine_config(build_parser().parse_args(["label", "x.txt", "--num-threads", "2147483648"]))
    monkeypatch.setenv("STRUCTSENT_NUM_THREADS", "1000000")  # named as the variable the user set
    with pytest.raises(ConfigError, match=r"^STRUCTSENT_NUM_THREADS='1000000': must be in 0\.\.1024$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    monkeypatch.setenv("STRUCTSENT_NUM_THREADS", "2")
    assert engine_config(build_parser().parse_args(["label", "x.txt"])).num_threads == 2


def test_an_unknown_option_by_name_is_a_config_error_naming_the_options():
    """load("default", foo=1) and replace(foo=1) raised Python's bare TypeError."""
    import structsent

    for call in (lambda: structsent.load("default", max_lenght=128), lambda: EngineConfig().replace(max_lenght=128),
                 lambda: EngineConfig(max_lenght=128)):  # (the constructor itself raised TypeError)
        with pytest.raises(ConfigError, match="unknown engine option 'max_lenght'; the options are: backend, .*max_length"):
            call()
    with pytest.raises(ConfigError, match="takes its options by name"):
        EngineConfig("cpu")  # type: ignore[misc]


def test_a_window_stride_for_truncated_texts_is_refused_not_ignored():
    """The command line refused it; the library took it and cut texts as if it were absent."""
    with pytest.raises(ConfigError) as caught:
        EngineConfig(window_stride=64)
    assert str(caught.value) == ("window_stride=64: applies only with long_text=windows (with long_text=truncate no "
                                 "text is cut into windows)")
    with pytest.raises(ConfigError, match=r"^window_stride=0: must be in 1\.\."):  # its range first
        EngineConfig(window_stride=0)
    assert EngineConfig(long_text="windows", window_stride=64).window_stride == 64

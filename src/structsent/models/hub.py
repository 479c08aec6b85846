"""Model hub ids (``damo/nlp_structbert_sentiment-classification_chinese-base``).

Downloaded through ``modelscope`` or ``huggingface_hub`` when one is installed and the hub is
reachable; otherwise a ModelNotFoundError says how to fetch the files and pass their path.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ..errors import ModelNotFoundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


def download(hub_id: str) -> Path:
    """Fetch a checkpoint into the local hub cache and return its directory."""
    failures = []
    for package, fetch in (("modelscope", _modelscope), ("huggingface_hub", _huggingface)):
        if importlib.util.find_spec(package) is None:
            continue
        try:
            return Path(fetch(hub_id))
        except Exception as err:  # offline, unknown id, auth: all mean "not available here"
            failures.append(f"{package}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise ModelNotFoundError(_how_to_download(hub_id, failures))


def _modelscope(hub_id: str) -> str:
    from modelscope import snapshot_download

    return snapshot_download(hub_id)


def _huggingface(hub_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(hub_id)


def _how_to_download(hub_id: str, failures: list[str]) -> str:
    tried = "; ".join(failures) if failures else "neither modelscope nor huggingface_hub is installed"
    return (
        f"model {hub_id!r} is not a local directory and could not be downloaded ({tried}). "
        f"On a machine with internet access run `modelscope download --model {hub_id} --local_dir DIR` "
        f"(or `huggingface-cli download {hub_id} --local-dir DIR`), copy DIR here and pass its path, "
        "e.g. structsent.load('DIR')."
    )

"""Tokenization with the Rust fast tokenizer: batch-encoded, unpadded, truncated or windowed.

Ids equal those of the reference ``transformers`` BERT tokenizer (tested on real reviews).
Bad texts (None, non-strings, empty, nothing left after normalisation) are flagged here, so
that they never reach a batch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from .config import LongTextPolicy
from .errors import ModelFormatError


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedText:
    """One input text as model-ready id sequences ([CLS] ... [SEP] each), or why it has none."""

    sequences: tuple[tuple[int, ...], ...] = ()
    truncated: bool = False
    error: str | None = None


def check_text(text: object) -> str | None:
    """Why ``text`` cannot be labelled, or None if it can."""
    if text is None:
        return "missing text (None)"
    if not isinstance(text, str):
        return f"not a string (got {type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


class Tokenizer:
    """A BERT WordPiece tokenizer with the truncation policy of the engine."""

    def __init__(self, backend, *, cls_id: int, sep_id: int, pad_id: int, vocab_size: int) -> None:
        self._backend = backend
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.pad_id = pad_id
        self.vocab_size = vocab_size

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, directory: Path) -> "Tokenizer":
        """Load from a model directory: tokenizer.json if present, else vocab.txt."""
        tokenizer_json = directory / "tokenizer.json"
        vocab_txt = directory / "vocab.txt"
        if tokenizer_json.is_file():
            return cls.from_tokenizer_json(tokenizer_json)
        if vocab_txt.is_file():
            return cls.from_vocab(vocab_txt, do_lower_case=_read_do_lower_case(directory))
        raise ModelFormatError(
            f"{directory}: no vocab.txt or tokenizer.json; copy the tokenizer files of the "
            "checkpoint into this directory"
        )

    @classmethod
    def from_vocab(cls, vocab_file: Path, *, do_lower_case: bool = True) -> "Tokenizer":
        from tokenizers import Tokenizer as RustTokenizer
        from tokenizers import models, normalizers, pre_tokenizers

        vocab = _read_vocab(vocab_file)
        backend = RustTokenizer(
            models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return cls._with_specials(backend, vocab_file)

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> "Tokenizer":
        from tokenizers import Tokenizer as RustTokenizer

        try:
            backend = RustTokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises plain Exception on bad JSON
            raise ModelFormatError(f"{path}: not a valid tokenizer.json ({err})") from err
        backend.no_truncation()
        backend.no_padding()
        return cls._with_specials(backend, path)

    @classmethod
    def _with_specials(cls, backend, source: Path) -> "Tokenizer":
        ids = {tok: backend.token_to_id(tok) for tok in ("[CLS]", "[SEP]", "[PAD]", "[UNK]")}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise ModelFormatError(f"{source}: the vocabulary lacks {', '.join(missing)}")
        return cls(
            backend,
            cls_id=ids["[CLS]"],
            sep_id=ids["[SEP]"],
            pad_id=ids["[PAD]"],
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
        )

    # -- encoding -----------------------------------------------------------------------------
    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens and without truncation."""
        safe = [_valid_unicode(t) for t in texts]
        return [e.ids for e in self._backend.encode_batch(safe, add_special_tokens=False)]

    def encode(
        self,
        texts: Sequence[object],
        *,
        max_length: int = 512,
        long_text: LongTextPolicy = LongTextPolicy.TRUNCATE,
        window_stride: int = 256,
    ) -> list[EncodedText]:
        """Encode every text; invalid ones come back with ``error`` set, in input order."""
        errors = [check_text(t) for t in texts]
        valid = [i for i, e in enumerate(errors) if e is None]
        encoded: list[EncodedText] = [EncodedText(error=e) for e in errors]
        content_max = max_length - 2
        for i, ids in zip(valid, self.content_ids([texts[i] for i in valid])):
            if not ids:
                encoded[i] = EncodedText(error="no tokens left after normalisation")
            elif len(ids) <= content_max:
                encoded[i] = EncodedText(sequences=(self._wrap(ids),))
            elif long_text is LongTextPolicy.WINDOWS:
                windows = split_windows(ids, content_max, window_stride)
                encoded[i] = EncodedText(sequences=tuple(map(self._wrap, windows)), truncated=False)
            else:
                encoded[i] = EncodedText(sequences=(self._wrap(ids[:content_max]),), truncated=True)
        return encoded

    def _wrap(self, ids: Sequence[int]) -> tuple[int, ...]:
        return (self.cls_id, *ids, self.sep_id)


def split_windows(ids: Sequence[int], size: int, stride: int) -> list[Sequence[int]]:
    """Overlapping windows of ``size`` ids, ``stride`` apart, the last one ending at the end."""
    if len(ids) <= size:
        return [ids]
    starts = list(range(0, len(ids) - size, stride))
    starts.append(len(ids) - size)
    return [ids[s : s + size] for s in starts]


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    try:
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{vocab_file}: cannot read the vocabulary ({err})") from err
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        vocab[token.rstrip("\r")] = index  # as the reference tokenizer: a repeat keeps the last id
    if not vocab:
        raise ModelFormatError(f"{vocab_file}: empty vocabulary")
    return vocab


def _read_do_lower_case(directory: Path) -> bool:
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return True  # BERT Chinese checkpoints (and StructBERT's) are uncased
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{config}: not valid JSON ({err})") from err

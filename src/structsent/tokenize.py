"""Tokenization with the Rust fast tokenizer: batch-encoded, unpadded, truncated or windowed.

Ids equal those of the reference ``transformers`` BERT tokenizer (tested on real reviews).
For the BERT pipeline (BertNormalizer + BertPreTokenizer + WordPiece) a vectorised path maps
each character that always stands alone (a Chinese character, a punctuation mark, a space) to
its id through a per-code-point table, and hands only the runs of other characters (Latin
words, digits, emoji) to the Rust tokenizer, once per distinct run: same ids, a fraction of
the time (see ``CharTable``). Other tokenizer setups take the Rust path for every text.
Bad texts (None, non-strings, empty, nothing left after normalisation) are flagged here, so
that they never reach a batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np

from .config import LongTextPolicy
from .errors import ModelFormatError
from .model_files import model_file_present

# One model-ready sequence of token ids: an int64 array (vectorised path) or a tuple (Rust path).
TokenIds: TypeAlias = "np.ndarray | tuple[int, ...]"


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class EncodedText:
    """One input text as model-ready id sequences ([CLS] ... [SEP] each), or why it has none.

    A sequence is an int64 array on the vectorised path (a view into the chunk's ids: no
    Python int per token, and padding is one copy per row) and a tuple on the Rust path;
    consumers only take ``len`` and copy it into a batch.
    """

    sequences: tuple[TokenIds, ...] = ()
    truncated: bool = False
    error: str | None = None

    def _identity(self) -> tuple:
        return tuple(tuple(int(i) for i in seq) for seq in self.sequences), self.truncated, self.error

    def __eq__(self, other: object) -> bool:
        """Equal ids, flags and error, whether a sequence is an array or a tuple."""
        return isinstance(other, EncodedText) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


_NO_TEXT = EncodedText(error="not encoded")  # a placeholder that ``Tokenizer.encode`` always replaces


def check_text(text: object) -> str | None:
    """Why ``text`` cannot be labelled, or None if it can."""
    if text is None:
        return "missing text (None)"
    if not isinstance(text, str):
        return f"not a string (got {type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


# The tokens BertTokenizer treats as special: matched whole in a text, never split into pieces.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

class Tokenizer:
    """A BERT WordPiece tokenizer with the truncation policy of the engine."""

    # Up to this many texts in a call, each is wrapped in [CLS]/[SEP] on its own (~2 us a text);
    # beyond, all at once in one array (a fixed ~15 us, then no cost per text): a request of one
    # review is encoded in 37-40 us, and that would add a quarter to it.
    WRAP_ONE_BY_ONE = 8

    def __init__(self, backend, *, cls_id: int, sep_id: int, pad_id: int, vocab_size: int) -> None:
        self._backend = backend
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        # The vectorised path where the pipeline allows it; None: every text goes through Rust.
        self.char_table: CharTable | None = CharTable.for_backend(backend)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, directory: Path) -> "Tokenizer":
        """Load from a model directory: tokenizer.json if present, else vocab.txt."""
        tokenizer_json = directory / "tokenizer.json"
        vocab_txt = directory / "vocab.txt"
        if model_file_present(tokenizer_json):
            return cls.from_tokenizer_json(tokenizer_json)
        if model_file_present(vocab_txt):
            return cls.from_vocab(vocab_txt, **_read_bert_options(directory))
        raise ModelFormatError(
            f"{directory}: no vocab.txt or tokenizer.json; copy the tokenizer files of the "
            "checkpoint into this directory"
        )

    @classmethod
    def from_vocab(cls, vocab_file: Path, *, do_lower_case: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True) -> "Tokenizer":
        """BertTokenizer's pipeline with its tokenizer_config.json options (strip_accents None:
        as do_lower_case; tokenize_chinese_chars False keeps runs of Chinese characters whole,
        and every text takes the Rust path)."""
        from tokenizers import AddedToken, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as RustTokenizer

        vocab = _read_vocab(vocab_file)
        backend = RustTokenizer(
            models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents,
            lowercase=do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # As transformers' BertTokenizer: "[SEP]" written in a text is the token [SEP], matched in the
        # text as written (not lower-cased), as a tokenizer.json of the same model matches it.
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                    for token in BERT_SPECIAL_TOKENS if token in vocab])
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
            vocab_size=_id_space(backend),
        )

    def learn_vocabulary(self) -> None:
        """Put every single-character token of the vocabulary into the character table now
        (~0.1 ms per character, all at once), so that no request pays for meeting them; a
        server calls this while it warms up. Nothing to do on the Rust-only path."""
        if self.char_table is not None:
            self.char_table.learn(token for token in self._backend.get_vocab() if len(token) == 1)

    # -- encoding -----------------------------------------------------------------------------
    def knows_every_character(self, texts: Sequence[object]) -> bool:
        """Whether every character of ``texts`` has been classified already, so that encoding them
        probes nothing (a never-seen character costs ~0.1 ms to learn). True without a table."""
        if self.char_table is None:
            return True
        return self.char_table.knows("".join(t for t in texts if isinstance(t, str)))

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens and without truncation."""
        safe = [_valid_unicode(t) for t in texts]
        if self.char_table is not None:
            return self.char_table.content_ids(safe)
        return rust_content_ids(self._backend, safe)

    def _content_sequences(self, texts: list[str]) -> tuple[Sequence[np.ndarray | list[int]], list[TokenIds | None]]:
        """``content_ids`` as the encoder wants them, and each text's [CLS] ids [SEP] where it came
        for free: on the table's path, int64 views into one array with room left for [CLS] and
        [SEP] around every text (no copy per text); None elsewhere (``_wrap`` makes it)."""
        if self.char_table is None:
            return rust_content_ids(self._backend, [_valid_unicode(t) for t in texts]), [None] * len(texts)
        flat, bounds = self.char_table.flat_ids(texts)
        if len(texts) <= self.WRAP_ONE_BY_ONE:
            return [flat[a:b] for a, b in zip(bounds, bounds[1:])], [None] * len(texts)
        return self._wrapped_views(flat, bounds)

    def _wrapped_views(self, flat: np.ndarray, bounds: list[int]) -> tuple[list[np.ndarray], list[TokenIds | None]]:
        """(each text's ids, each text's [CLS] ids [SEP]): views into one new array that holds
        every text's ids with [CLS] before and [SEP] after each (``bounds``: where texts begin in ``flat``)."""
        texts = len(bounds) - 1
        at = np.asarray(bounds, dtype=np.int64) + 2 * np.arange(texts + 1, dtype=np.int64)
        starts, ends = at[:-1], at[1:] - 1  # each text's [CLS] and [SEP]
        wrapped = np.empty(len(flat) + 2 * texts, dtype=np.int64)
        content = np.ones(len(wrapped), dtype=bool)
        content[starts] = content[ends] = False
        wrapped[starts], wrapped[ends] = self.cls_id, self.sep_id
        wrapped[content] = flat
        pairs = list(zip(starts.tolist(), ends.tolist()))
        return [wrapped[a + 1 : b] for a, b in pairs], [wrapped[a : b + 1] for a, b in pairs]

    def encode(
        self,
        texts: Sequence[object],
        *,
        max_length: int = 512,
        long_text: LongTextPolicy = LongTextPolicy.TRUNCATE,
        window_stride: int = 256,
        keep_end: bool = False,
    ) -> list[EncodedText]:
        """Encode every text; invalid ones come back with ``error`` set, in input order. Truncation
        keeps a text's first tokens, or its last ones with ``keep_end``."""
        errors = [check_text(t) for t in texts]
        encoded: list[EncodedText] = [_NO_TEXT if e is None else EncodedText(error=e) for e in errors]
        valid = [i for i, e in enumerate(errors) if e is None]
        content_max = max_length - 2
        valid_texts = [text for text in (texts[i] for i in valid) if isinstance(text, str)]  # check_text passed
        contents, wrapped = self._content_sequences(valid_texts)
        for i, ids, whole in zip(valid, contents, wrapped):
            if not len(ids):
                encoded[i] = EncodedText(error="no tokens left after normalisation")
            elif len(ids) <= content_max:
                encoded[i] = EncodedText(sequences=(self._wrap(ids) if whole is None else whole,))
            elif long_text is LongTextPolicy.WINDOWS:
                windows = split_windows(ids, content_max, window_stride)
                encoded[i] = EncodedText(sequences=tuple(map(self._wrap, windows)), truncated=False)
            else:
                kept = ids[len(ids) - content_max:] if keep_end else ids[:content_max]
                encoded[i] = EncodedText(sequences=(self._wrap(kept),), truncated=True)
        return encoded

    def _wrap(self, ids: np.ndarray | Sequence[int]) -> TokenIds:
        """[CLS] ids [SEP], an array for an array."""
        if isinstance(ids, np.ndarray):
            wrapped = np.empty(len(ids) + 2, dtype=np.int64)
            wrapped[0], wrapped[1:-1], wrapped[-1] = self.cls_id, ids, self.sep_id
            return wrapped
        return (self.cls_id, *ids, self.sep_id)


def rust_content_ids(backend, texts: list[str]) -> list[list[int]]:
    """Ids from the Rust tokenizer's batch encode (``encode_batch_fast`` measured slower on 100,000 texts)."""
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


class CharTable:
    """The BERT pipeline's ids computed per code point, with the Rust tokenizer for the rest.

    BertNormalizer puts spaces around every Chinese character and BertPreTokenizer splits at
    every space and punctuation mark, so such a character ("standalone") yields the same ids
    wherever it stands, and the text between two of them (a "run": a Latin word, digits, an
    emoji...) is tokenized as if it stood alone. A text's ids are therefore its standalone
    characters' ids from a table and its runs' ids from the Rust tokenizer, in order; the runs
    repeat ("iPhone", "5", "👍") and are computed once each.

    A character counts as standalone only if its Unicode class says so (Chinese, punctuation,
    white space), its decomposition is itself, and the Rust tokenizer confirms it between word
    characters of several scripts; anything else is part of a run, which is always exact. The
    table is filled in lazily, for the characters seen. Tests compare both paths on every
    committed review and on random mixtures of scripts, marks, controls and emoji.
    """

    UNSEEN, DROPPED, SINGLE, RUN = 0, 1, 2, 3
    CONTEXTS = (("a", "a"), ("1", "x"), ("é", "ß"), ("天", "地"), ("ab", "12"))
    RUN_CACHE_LIMIT = 1 << 18  # distinct runs remembered (a few MB); later ones are recomputed
    # Up to this many characters in a call, a loop over them beats the array passes, whose fixed
    # costs dominate small calls (a 63-character review: 0.21 -> 0.10 ms for the whole encode, measured).
    LOOP_CHARS = 512

    def __init__(self, backend, special_texts: Sequence[str] = ()) -> None:
        self._backend = backend
        self._special_texts = tuple(special_texts)  # added tokens matched in the raw text
        self._kind = np.zeros(0x110000, dtype=np.uint8)
        self._ids = np.zeros(0x110000, dtype=np.int32)  # with the kinds: 5.6 MB per tokenizer
        self._runs: dict[str, list[int]] = {}
        self._learning = threading.Lock()
        self._views()

    def _views(self) -> None:
        """Memory views of the tables: indexing one yields a Python int, several times faster than
        indexing the array (the loop path reads one entry per character). They share the arrays'
        memory, so they see what is learnt later."""
        self._kind_view, self._id_view = self._kind.data, self._ids.data

    def __getstate__(self) -> dict:
        """Picklable (sent once to each tokenizer process): everything learnt, without the lock."""
        state = {name: getattr(self, name) for name in ("_backend", "_special_texts", "_kind", "_ids", "_runs")}
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._learning = threading.Lock()
        self._views()

    @classmethod
    def for_backend(cls, backend) -> "CharTable | None":
        """A table for a plain BERT WordPiece pipeline; None for any other (it takes the Rust path)."""
        try:
            setup = json.loads(backend.to_str())
        except Exception:  # an object without to_str() is not a tokenizers.Tokenizer
            return None
        normalizer, pre_tokenizer, model = setup.get("normalizer") or {}, setup.get("pre_tokenizer") or {}, setup.get("model") or {}
        plain_bert = (
            normalizer.get("type") == "BertNormalizer" and normalizer.get("clean_text") is True
            and normalizer.get("handle_chinese_chars") is True and pre_tokenizer.get("type") == "BertPreTokenizer"
            and model.get("type") == "WordPiece"
        )
        added = setup.get("added_tokens") or []
        if not plain_bert or any(token.get("normalized", True) for token in added):
            return None  # an added token matched in the normalized text could span characters
        return cls(backend, [token["content"] for token in added])

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text (no special tokens, no truncation), equal to the Rust tokenizer's."""
        if not texts:
            return []
        if self._holds_special_text(texts):
            return self._with_special_texts(texts)
        flat, bounds = self._flat_ids(texts)
        ids = flat.tolist()
        return [ids[a:b] for a, b in zip(bounds, bounds[1:])]

    def content_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """``content_ids`` as int64 arrays, views into one array (no Python int per token)."""
        if not texts:
            return []
        if self._holds_special_text(texts):
            return [np.asarray(ids, dtype=np.int64) for ids in self._with_special_texts(texts)]
        flat, bounds = self._flat_ids(texts)
        return [flat[a:b] for a, b in zip(bounds, bounds[1:])]

    def flat_ids(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Every text's ids in one int64 array and where each text's begin (one more bound than
        texts). Any text may hold a lone surrogate: it is read as U+FFFD, as everywhere (checked
        once per call, when the call's characters are converted, not text by text)."""
        if not texts:
            return np.zeros(0, dtype=np.int64), [0]
        if self._holds_special_text(texts):  # those texts through Rust, then as one array like the rest
            ids = self._with_special_texts([_valid_unicode(t) for t in texts])
            bounds = [0, *itertools.accumulate(map(len, ids))]
            return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=bounds[-1]), bounds
        if sum(map(len, texts)) <= self.LOOP_CHARS:  # the loop path reads each character: cleaned first
            return self._flat_ids([_valid_unicode(t) for t in texts])
        try:
            return self._flat_ids(texts)
        except UnicodeEncodeError:  # a lone surrogate (the array path converts to UTF-32, which refuses it)
            return self._flat_ids([_valid_unicode(t) for t in texts])

    def _holds_special_text(self, texts: list[str]) -> bool:
        if not self._special_texts:
            return False
        joined = "".join(texts)
        # One search for their first characters ("[" for BERT's) settles most calls: reviews rarely hold one.
        return any(start in joined for start in {special[:1] for special in self._special_texts}) and \
            any(special in joined for special in self._special_texts)

    def _flat_ids(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Every text's ids in one array, and where each text's begin (one more bound than texts)."""
        if sum(map(len, texts)) <= self.LOOP_CHARS:
            return self._flat_ids_by_loop(texts)
        joined = "".join(texts)
        points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        kinds = self._kinds(points)
        text_starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=text_starts[1:])
        run_starts, run_ends = _runs(kinds == self.RUN, text_starts)
        run_ids = self._run_ids([joined[a:b] for a, b in zip(run_starts.tolist(), run_ends.tolist())])
        counts = (kinds == self.SINGLE).astype(np.int64)
        run_lengths = np.fromiter(map(len, run_ids), dtype=np.int64, count=len(run_ids))
        counts[run_starts] = run_lengths
        ends = np.cumsum(counts)
        flat = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        single = np.flatnonzero(kinds == self.SINGLE)
        flat[ends[single] - 1] = self._ids[points[single]]
        if len(run_ids):
            first = ends[run_starts] - run_lengths  # where each run's ids begin
            within = np.arange(int(run_lengths.sum())) - np.repeat(np.cumsum(run_lengths) - run_lengths, run_lengths)
            flat[np.repeat(first, run_lengths) + within] = np.fromiter(
                (i for ids in run_ids for i in ids), dtype=np.int64, count=int(run_lengths.sum()))
        return flat, np.concatenate(([0], ends))[text_starts].tolist()

    def _flat_ids_by_loop(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """``_flat_ids`` for small calls, character by character: the same runs (maximal stretches
        of run characters within a text) and the same ids; tests compare both paths."""
        kinds, ids = self._kind_view, self._id_view
        pieces: list[int | str] = []  # a standalone character's id, or a run's text
        ends = []
        for text in texts:
            start = -1
            for at, char in enumerate(text):
                kind = kinds[ord(char)]
                if kind == self.UNSEEN:  # rare once warm: learn every new character of the call at once
                    self._learn_unseen("".join(texts))
                    kind = kinds[ord(char)]
                if kind == self.RUN:
                    if start < 0:
                        start = at
                    continue
                if start >= 0:
                    pieces.append(text[start:at])
                    start = -1
                if kind == self.SINGLE:
                    pieces.append(ids[ord(char)])
            if start >= 0:
                pieces.append(text[start:])
            ends.append(len(pieces))
        run_ids = iter(self._run_ids([piece for piece in pieces if isinstance(piece, str)]))
        flat: list[int] = []
        bounds, begin = [0], 0
        for end in ends:
            for piece in pieces[begin:end]:
                if isinstance(piece, str):
                    flat.extend(next(run_ids))
                else:
                    flat.append(piece)
            bounds.append(len(flat))
            begin = end
        return np.array(flat, dtype=np.int64), bounds

    def knows(self, joined: str) -> bool:
        return not self._unseen(joined)

    def _learn_unseen(self, joined: str) -> None:
        unseen = self._unseen(joined)
        if unseen:
            self._learn(unseen)

    def _unseen(self, joined: str) -> list[int]:
        """The code points of ``joined`` never classified yet, in order."""
        kinds = self._kind_view
        return sorted(point for point in map(ord, set(joined)) if kinds[point] == self.UNSEEN)

    def _with_special_texts(self, texts: list[str]) -> list[list[int]]:
        """Texts that hold an added token's text go through Rust, which matches it; the rest vectorised."""
        special = [i for i, t in enumerate(texts) if any(s in t for s in self._special_texts)]
        plain = [i for i, t in enumerate(texts) if not any(s in t for s in self._special_texts)]
        out: list[list[int]] = [[] for _ in texts]
        for i, ids in zip(special, rust_content_ids(self._backend, [texts[i] for i in special])):
            out[i] = ids
        if plain:  # straight to the table (the shared list of added tokens' texts is never changed)
            flat, bounds = self._flat_ids([texts[i] for i in plain])
            ids = flat.tolist()
            for i, start, end in zip(plain, bounds, bounds[1:]):
                out[i] = ids[start:end]
        return out

    def learn(self, chars: Iterable[str]) -> None:
        """Classify these characters now, in one pass: met a few at a time in requests, the same
        characters cost several times more (each pass probes the Rust tokenizer in every context)."""
        self._learn(sorted({ord(c) for c in chars if len(c) == 1}))

    def _kinds(self, points: np.ndarray) -> np.ndarray:
        kinds = self._kind[points]
        if (kinds == self.UNSEEN).any():
            self._learn(np.unique(points[kinds == self.UNSEEN]).tolist())
            kinds = self._kind[points]
        return kinds

    def _run_ids(self, runs: list[str]) -> list[list[int]]:
        cache = self._runs
        missing = list(dict.fromkeys(r for r in runs if r not in cache))
        if missing:
            computed = dict(zip(missing, rust_content_ids(self._backend, missing)))
            for run, ids in computed.items():
                if len(cache) < self.RUN_CACHE_LIMIT:
                    cache[run] = ids
            return [computed[r] if r in computed else cache[r] for r in runs]
        return [cache[r] for r in runs]

    def _learn(self, points: list[int]) -> None:
        """Classify code points never seen before (ids first, then kinds: readers see no half entry)."""
        with self._learning:
            chars = [chr(p) for p in points if self._kind[p] == self.UNSEEN]
            if not chars:  # all learnt already (by another thread, or an earlier call)
                return
            candidates = [c for c in chars if _may_stand_alone(c)]
            alone = rust_content_ids(self._backend, candidates)
            standalone = self._confirmed(candidates, alone)
            for char, ids in zip(candidates, alone):
                if char in standalone:
                    self._ids[ord(char)] = ids[0] if ids else 0
            for char in chars:
                kind = self.RUN
                if char in standalone:
                    kind = self.SINGLE if standalone[char] else self.DROPPED
                self._kind[ord(char)] = kind

    def _confirmed(self, candidates: list[str], alone: list[list[int]]) -> dict[str, bool]:
        """The candidates the Rust tokenizer treats as standalone in every context: char -> has an id."""
        left = rust_content_ids(self._backend, [a for a, _ in self.CONTEXTS])
        right = rust_content_ids(self._backend, [b for _, b in self.CONTEXTS])
        probes = [a + c + b for c in candidates for a, b in self.CONTEXTS]
        got = iter(rust_content_ids(self._backend, probes))
        confirmed = {}
        for char, ids in zip(candidates, alone):
            agree = [next(got) == before + ids + after for before, after in zip(left, right)]
            if len(ids) <= 1 and all(agree):
                confirmed[char] = bool(ids)
        return confirmed


def _may_stand_alone(char: str) -> bool:
    """Chinese, punctuation or white space by its Unicode class, undecomposed and not combining."""
    if unicodedata.normalize("NFD", char) != char or unicodedata.combining(char):
        return False
    ascii_punctuation = char.isascii() and char.isprintable() and not char.isalnum()
    return unicodedata.category(char)[0] in "PZ" or char in "\t\n\r" or ascii_punctuation or _is_chinese(ord(char))


def _is_chinese(point: int) -> bool:
    """BERT's "Chinese character" blocks (CJK ideographs, not kana or hangul)."""
    return (0x4E00 <= point <= 0x9FFF or 0x3400 <= point <= 0x4DBF or 0x20000 <= point <= 0x2A6DF
            or 0x2A700 <= point <= 0x2B73F or 0x2B740 <= point <= 0x2B81F or 0x2B820 <= point <= 0x2CEAF
            or 0xF900 <= point <= 0xFAFF or 0x2F800 <= point <= 0x2FA1F)


def _runs(in_run: np.ndarray, text_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each maximal stretch of run characters, cut at text boundaries."""
    cut = np.zeros(len(in_run) + 1, dtype=bool)
    cut[text_starts] = True
    before = np.concatenate(([False], in_run[:-1])) & ~cut[:-1]
    after = np.concatenate((in_run[1:], [False])) & ~cut[1:]
    return np.flatnonzero(in_run & ~before), np.flatnonzero(in_run & ~after) + 1


def split_windows(ids: Sequence[int] | np.ndarray, size: int, stride: int) -> list[Sequence[int] | np.ndarray]:
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


def _id_space(backend) -> int:
    """One more than the largest token id: the embedding rows the ids need. Not the count of
    tokens: a token repeated in vocab.txt keeps its last line's id, and tokenizer.json may skip ids."""
    return max(backend.get_vocab(with_added_tokens=True).values(), default=-1) + 1


# Unicode's White_Space characters: what Rust's str::trim_end removes (Python's str.rstrip() would
# also remove the separators U+001C..U+001F).
_UNICODE_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    try:
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{vocab_file}: cannot read the vocabulary ({err})") from err
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):  # (its first token, [PAD] say, was reported missing)
        raise ModelFormatError(f"{vocab_file}: begins with a UTF-8 byte order mark, which would be part of its first "
                               "token; save it without one (as UTF-8, not 'UTF-8 with BOM')")
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        # As the reference tokenizers read it: trailing white space is not part of a token (the Rust
        # WordPiece trims it; "好 " kept it, and every 好 became [UNK] without a word), and a repeat
        # keeps the last id.
        vocab[token.rstrip(_UNICODE_WHITE_SPACE)] = index
    if not vocab:
        raise ModelFormatError(f"{vocab_file}: empty vocabulary")
    return vocab


def _read_bert_options(directory: Path) -> dict:
    """The options of BertTokenizer that tokenizer_config.json may set and that change the ids:
    do_lower_case, strip_accents and tokenize_chinese_chars (only the first was read, so a
    checkpoint setting the others got other ids than transformers gives it)."""
    config = directory / "tokenizer_config.json"
    if not model_file_present(config):
        return {}  # BERT Chinese checkpoints (and StructBERT's) are uncased, with BertTokenizer's defaults
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # bad bytes, bad JSON, a huge number, deep nesting
        raise ModelFormatError(f"{config}: not valid JSON ({type(err).__name__}: {err})") from err
    if not isinstance(settings, dict):
        raise ModelFormatError(f"{config}: expected a JSON object, got {type(settings).__name__}")
    options = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
    for name, default in options.items():
        value = settings.get(name, default)
        if value is None and default is None:
            continue
        if not isinstance(value, bool):  # "false", a string, is true to Python: never guess
            allowed = "true, false or null" if default is None else "true or false"
            raise ModelFormatError(f"{config}: {name} must be {allowed}, got {value!r}")
        options[name] = value
    return options

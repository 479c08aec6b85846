import json
import random
from pathlib import Path

import numpy as np
import pytest

from structsent.config import LongTextPolicy
from structsent.tokenize import (
    BERT_SPECIAL_TOKENS,
    CharTable,
    Tokenizer,
    _valid_unicode,
    rust_content_ids,
    split_windows,
)

from .conftest import VOCAB

EDGE_TEXTS = [
    "这家外卖送得很快，味道也不错",
    "iPhone 15 Pro Max 的屏幕 OLED 真好看！！！",
    "价格 ¥2999，比京东便宜 300 元，12.5% 的折扣",
    "ＡＢＣ全角字母和１２３全角数字，还有「引号」【括号】",
    "😀😂👍🔥 表情包评论 ❤️",
    "👍👍👍",
    "Unaffable résumé naïve café ÀÉÎÕÜ",
    "混合text和English words，还有unbelievably长的单词supercalifragilisticexpialidocious",
    "tab\tnew\nline\r\nand\x00control\x07chars",
    "日本語のレビューも少し。한국어 리뷰도 있습니다.",
    "yyds绝绝子！！！踩雷了…… 避雷 ~~~",
    "   前后有空格   ",
    "a" * 150,  # longer than WordPiece's 100-character limit -> [UNK]
    "http://example.com/path?q=1&x=2 #话题# @用户",
    # special tokens written in a review: the tokens themselves, as the reference and a tokenizer.json
    # give them (they were split into "[", "sep", "]" from vocab.txt); lower-cased, plain text
    "好吃[SEP]差评", "[CLS]开头", "a[MASK]b", "[PAD][UNK]x", "[sep]小写", "好[SEP", "[SEP][SEP]",
]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_vocab(VOCAB, do_lower_case=True)


@pytest.fixture(scope="module")
def reference():
    from transformers import BertTokenizerLegacy

    ref = BertTokenizerLegacy(vocab_file=str(VOCAB), do_lower_case=True)
    assert ref.convert_tokens_to_ids("好") != ref.unk_token_id  # the vocabulary was really read
    return ref


def test_ids_equal_reference_on_edge_cases(tokenizer, reference):
    ours = tokenizer.content_ids(EDGE_TEXTS)
    for text, ids in zip(EDGE_TEXTS, ours):
        assert ids == reference.encode(text, add_special_tokens=False), text


def test_ids_equal_reference_on_real_reviews(tokenizer, reference, real_reviews):
    assert len(real_reviews) >= 200
    ours = tokenizer.content_ids(real_reviews)
    mismatches = [t for t, ids in zip(real_reviews, ours) if ids != reference.encode(t, add_special_tokens=False)]
    assert mismatches == []


def test_tokenizer_json_written_by_transformers_gives_the_same_ids(tmp_path, tokenizer, real_reviews):
    from transformers import BertTokenizer

    source = tmp_path / "src"
    source.mkdir()
    (source / "vocab.txt").write_bytes(VOCAB.read_bytes())
    BertTokenizer.from_pretrained(str(source), do_lower_case=True).save_pretrained(str(tmp_path / "out"))
    (tmp_path / "out" / "vocab.txt").unlink(missing_ok=True)
    from_json = Tokenizer.from_dir(tmp_path / "out")
    texts = real_reviews[:200] + EDGE_TEXTS
    assert from_json.content_ids(texts) == tokenizer.content_ids(texts)


def test_encode_wraps_with_cls_and_sep(tokenizer):
    (enc,) = tokenizer.encode(["好评"])
    assert enc.sequences[0][0] == tokenizer.cls_id and enc.sequences[0][-1] == tokenizer.sep_id
    assert len(enc.sequences[0]) == 4 and not enc.truncated and enc.error is None


def test_bad_inputs_are_flagged_not_raised(tokenizer):
    texts = [None, 12, "", "   \n\t", "\x00\x01\x02", "ok 好", b"bytes"]
    encoded = tokenizer.encode(texts)
    assert [e.error is not None for e in encoded] == [True, True, True, True, True, False, True]
    assert "None" in encoded[0].error and "int" in encoded[1].error and "bytes" in encoded[6].error
    assert encoded[4].error == "no tokens left after normalisation"


def test_lone_surrogate_is_dropped_like_a_control_character(tokenizer):
    (enc,) = tokenizer.encode(["好\ud800评"])
    (clean,) = tokenizer.encode(["好评"])
    assert [list(seq) for seq in enc.sequences] == [list(seq) for seq in clean.sequences]


@pytest.mark.parametrize("filler", [0, 500], ids=["small-call", "array-path"])
def test_a_lone_surrogate_in_a_call_of_any_size_is_read_as_a_replacement_character(tokenizer, filler):
    """Calls of more than CharTable.LOOP_CHARS characters check for surrogates once per call;
    the texts around the bad one keep their own ids, each wrapped in [CLS] ... [SEP]."""
    texts = ["好评" * (filler // 2 or 1), "差\udc80劲", "iPhone 5 很好", "\ud83d"]
    encoded = tokenizer.encode(texts)
    rust = rust_content_ids(tokenizer._backend, [t.replace("\udc80", "\ufffd").replace("\ud83d", "\ufffd")
                                                 for t in texts])
    assert [list(e.sequences[0]) if e.sequences else e.error for e in encoded] == \
        [[tokenizer.cls_id, *ids, tokenizer.sep_id] if ids else "no tokens left after normalisation" for ids in rust]
    assert len(encoded[0].sequences[0]) == filler + 2 or not filler


def test_truncation_keeps_the_first_tokens_and_flags(tokenizer):
    text = "好" * 600
    (enc,) = tokenizer.encode([text], max_length=512)
    assert len(enc.sequences) == 1 and len(enc.sequences[0]) == 512 and enc.truncated


def test_windows_cover_the_whole_text(tokenizer):
    text = "".join(chr(0x4E00 + i) for i in range(1000))
    (enc,) = tokenizer.encode([text], max_length=130, long_text=LongTextPolicy.WINDOWS, window_stride=64)
    content = tokenizer.content_ids([text])[0]
    covered = set()
    for seq in enc.sequences:
        assert len(seq) <= 130 and seq[0] == tokenizer.cls_id and seq[-1] == tokenizer.sep_id
        covered.update(seq[1:-1])
    assert covered == set(content) and not enc.truncated


@pytest.mark.parametrize("n,size,stride", [(10, 4, 2), (9, 4, 3), (4, 4, 1), (100, 30, 30), (5, 10, 3)])
def test_split_windows(n, size, stride):
    ids = list(range(n))
    windows = split_windows(ids, size, stride)
    assert all(len(w) == min(size, n) for w in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == n - 1
    starts = [w[0] for w in windows]
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_100k_character_text(tokenizer):
    (enc,) = tokenizer.encode(["很好" * 50_000], max_length=512)
    assert enc.truncated and len(enc.sequences[0]) == 512


# -- the vectorised path (CharTable) against the Rust tokenizer ---------------------------------

DATA = Path(__file__).parent / "data"
SAMPLE_REVIEWS = Path(__file__).parents[1] / "src" / "structsent" / "data" / "sample_reviews.txt"


def committed_texts() -> list[str]:
    texts = []
    for path in sorted(DATA.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts + SAMPLE_REVIEWS.read_text(encoding="utf-8").splitlines()


def random_mixtures(count: int, seed: int = 0) -> list[str]:
    """Texts mixing every kind of character the table could get wrong, and random code points."""
    pool = list(
        "天地好评，。！？、；：“”‘’（）【】《》…—～·abcXYZéÉßΣσς'.-_/\\@#$%^&*+=<>|~`\"0123456789 \t\n\r"
        "\x00\x07\x1c\x1f\x7f\x85\xa0\u3000\u2028\u200b\u200d\ufeff\ufffd\u0301\u0308\u0345\u05b0\u0e31"
        "ＡＢ１２！（ｱ가한日本語のカタカナ\uf900\ufa0e\U0002f800\U00020000😀👍❤️🔥\U0001d165\u037e\u0387\u1fef"
        "\u2000ǅİﬁ①⅓"
    )
    rng = random.Random(seed)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(count)]
    texts += ["".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(1, 30))) for _ in range(count // 4)]
    return texts


def rust_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer._backend.encode_batch([_valid_unicode(t) for t in texts], add_special_tokens=False)]


def test_bert_vocabulary_gets_the_vectorised_path(tokenizer):
    assert tokenizer.char_table is not None


def test_vectorised_ids_equal_rust_on_every_committed_text(tokenizer):
    texts = committed_texts() + EDGE_TEXTS
    assert len(texts) > 2000
    assert tokenizer.content_ids(texts) == rust_ids(tokenizer, texts)


def test_vectorised_ids_equal_rust_on_random_mixtures(tokenizer):
    texts = random_mixtures(4000)
    assert tokenizer.content_ids(texts) == rust_ids(tokenizer, texts)


def in_small_calls(tokenizer: Tokenizer, texts: list[str], size: int) -> list[list[int]]:
    return [ids for start in range(0, len(texts), size) for ids in tokenizer.content_ids(texts[start : start + size])]


@pytest.mark.parametrize("size", [1, 3])
def test_small_calls_take_the_loop_path_and_equal_rust(size):
    """Calls of up to LOOP_CHARS characters (a server's requests) go character by character; on a
    fresh table (every character met there first) and on every committed text and mixture."""
    fresh = Tokenizer.from_vocab(VOCAB, do_lower_case=True)
    texts = random_mixtures(1500, seed=7) + committed_texts() + EDGE_TEXTS
    calls = [texts[start : start + size] for start in range(0, len(texts), size)]
    by_loop = [call for call in calls if sum(map(len, call)) <= fresh.char_table.LOOP_CHARS]
    assert len(by_loop) > 0.9 * len(calls)
    assert in_small_calls(fresh, texts, size) == rust_ids(fresh, texts)


def test_the_loop_path_and_the_array_path_agree_text_by_text(tokenizer):
    table = tokenizer.char_table
    texts = [_valid_unicode(t) for t in committed_texts()[:800] + random_mixtures(400, seed=3) + EDGE_TEXTS]
    texts = [t for t in texts if not table._holds_special_text([t])]  # those take the Rust path on both
    by_loop = [table._flat_ids_by_loop([t]) for t in texts]
    arrays = table.content_arrays(texts)  # one call: the array path
    assert sum(map(len, texts)) > table.LOOP_CHARS
    assert [flat.tolist() for flat, _ in by_loop] == [a.tolist() for a in arrays]
    assert all(bounds == [0, len(flat)] for flat, bounds in by_loop)


def _as_lists(encoded):
    return [([list(seq) for seq in e.sequences], e.truncated, e.error) for e in encoded]


@pytest.mark.parametrize("long_text", [LongTextPolicy.TRUNCATE, LongTextPolicy.WINDOWS])
def test_encoder_arrays_hold_the_rust_paths_sequences(tokenizer, long_text):
    """The encoder's int64 arrays (vectorised path) equal the Rust path's tuples, with [CLS]/[SEP],
    truncation and windows, on committed texts, random mixtures, bad values and long texts."""
    rust_only = Tokenizer.from_vocab(VOCAB, do_lower_case=True)
    rust_only.char_table = None
    texts = committed_texts()[:1500] + random_mixtures(300) + EDGE_TEXTS + [None, "", " ", 7, "好" * 700]
    options = dict(max_length=64, long_text=long_text, window_stride=20)
    vectorised = tokenizer.encode(texts, **options)
    assert all(seq.dtype == np.int64 for e in vectorised for seq in e.sequences)
    assert _as_lists(vectorised) == _as_lists(rust_only.encode(texts, **options))


@pytest.mark.parametrize("call_size", [1, Tokenizer.WRAP_ONE_BY_ONE, Tokenizer.WRAP_ONE_BY_ONE + 1, 37])
def test_calls_of_any_size_give_the_rust_paths_sequences(tokenizer, call_size):
    """Texts are wrapped one by one in small calls and all at once in larger ones: same ids."""
    rust_only = Tokenizer.from_vocab(VOCAB, do_lower_case=True)
    rust_only.char_table = None
    texts = committed_texts()[:150] + random_mixtures(40, seed=5) + EDGE_TEXTS + [None, "", "好" * 700]
    options = dict(max_length=64, long_text=LongTextPolicy.TRUNCATE)
    called = [e for start in range(0, len(texts), call_size)
              for e in tokenizer.encode(texts[start : start + call_size], **options)]
    assert _as_lists(called) == _as_lists(rust_only.encode(texts, **options))


def test_encoded_texts_compare_and_hash_by_their_ids(tokenizer):
    rust_only = Tokenizer.from_vocab(VOCAB, do_lower_case=True)
    rust_only.char_table = None
    texts = ["好评", "差评", "", "好" * 600]
    vectorised, rust = tokenizer.encode(texts, max_length=64), rust_only.encode(texts, max_length=64)
    assert vectorised == rust and vectorised == tokenizer.encode(texts, max_length=64)
    assert vectorised[0] != vectorised[1] and vectorised[3].truncated
    assert len({*vectorised, *rust}) == 4


def test_content_arrays_equal_content_ids(tokenizer):
    texts = [_valid_unicode(t) for t in committed_texts()[:500] + random_mixtures(200) + ["", "好"]]
    arrays = tokenizer.char_table.content_arrays(texts)
    assert [a.tolist() for a in arrays] == tokenizer.content_ids(texts)


def test_vectorised_ids_do_not_depend_on_the_other_texts_of_the_call(tokenizer):
    texts = ["abc", "def", "", "好", "x!", "y", "😀", "😀👍", "12", "34"]
    together = tokenizer.content_ids(texts)
    assert together == [tokenizer.content_ids([t])[0] for t in texts]  # runs are cut where a text ends


def test_vectorised_path_counts_characters_it_cannot_vouch_for_as_runs(tokenizer):
    table = tokenizer.char_table
    tokenizer.content_ids(["好，a\x1c\u0301 "])
    kinds = {c: int(table._kind[ord(c)]) for c in "好，a\x1c\u0301 "}
    assert kinds == {"好": table.SINGLE, "，": table.SINGLE, " ": table.DROPPED,
                     "a": table.RUN, "\x1c": table.RUN, "\u0301": table.RUN}


def test_learning_the_vocabulary_fills_the_table_and_changes_no_ids():
    tok = Tokenizer.from_vocab(VOCAB)  # a fresh table: nothing learnt yet
    table = tok.char_table
    singles = [t for t in tok._backend.get_vocab() if len(t) == 1]
    assert len(singles) > 1000 and all(table._kind[ord(c)] == table.UNSEEN for c in singles)
    tok.learn_vocabulary()
    assert all(table._kind[ord(c)] != table.UNSEEN for c in singles)
    assert table._kind[ord("好")] == table.SINGLE and table._ids[ord("好")] == tok._backend.token_to_id("好")
    texts = committed_texts()[:3000] + random_mixtures(500, seed=1)
    assert tok.content_ids(texts) == rust_ids(tok, texts)


def test_texts_holding_an_added_token_take_the_rust_path(tmp_path):
    from tokenizers import AddedToken

    tok = Tokenizer.from_vocab(VOCAB)
    tok._backend.add_special_tokens([AddedToken("[CLS]", normalized=False)])
    tok.char_table = CharTable.for_backend(tok._backend)
    assert tok.char_table is not None
    texts = ["好[CLS]评", "好评", "[CLS]", "a[CLS]b"]
    assert tok.content_ids(texts) == rust_ids(tok, texts)
    assert tok.content_ids(["[CLS]"])[0] == [tok.cls_id]


def test_the_added_tokens_texts_stay_in_place_while_a_call_holding_one_runs(monkeypatch):
    """Another thread (the server tokenizes on its event loop and in a pool) must always see the
    added tokens' texts: a call that holds one never takes them away, even for a moment."""
    from tokenizers import AddedToken

    tok = Tokenizer.from_vocab(VOCAB)
    tok._backend.add_special_tokens([AddedToken("[CLS]", normalized=False)])
    tok.char_table = table = CharTable.for_backend(tok._backend)
    seen = []
    flat_ids = CharTable._flat_ids
    monkeypatch.setattr(CharTable, "_flat_ids", lambda self, texts: (seen.append(self._special_texts), flat_ids(self, texts))[1])
    texts = ["好[CLS]评", "好评" * 300, "[CLS]", "差"]
    assert tok.content_ids(texts) == rust_ids(tok, texts)
    assert seen and all(special == BERT_SPECIAL_TOKENS for special in seen) and table._special_texts == BERT_SPECIAL_TOKENS


def test_pipelines_other_than_bert_wordpiece_take_the_rust_path():
    from tokenizers import AddedToken, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as RustTokenizer

    plain = RustTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    assert CharTable.for_backend(plain) is None
    bert = Tokenizer.from_vocab(VOCAB)._backend
    bert.add_tokens([AddedToken("好评", normalized=True)])
    assert CharTable.for_backend(bert) is None
    bert.normalizer = normalizers.Lowercase()
    assert CharTable.for_backend(bert) is None


def test_truncation_keeps_the_last_tokens_with_keep_end(tokenizer):
    text = "".join(chr(0x4E00 + i) for i in range(40))  # 40 CJK characters, one token each
    start, end = (tokenizer.encode([text], max_length=12, keep_end=keep)[0] for keep in (False, True))
    ids = tokenizer.content_ids([text])[0]
    assert list(start.sequences[0][1:-1]) == ids[:10] and list(end.sequences[0][1:-1]) == ids[-10:]
    assert start.truncated and end.truncated


@pytest.mark.parametrize(("content", "message"), [
    (b"[1]", "expected a JSON object, got list"),
    (b"null", "expected a JSON object, got NoneType"),
    (b"\xff{}", "not valid JSON (UnicodeDecodeError"),
    (b'{"do_lower_case": "false"}', "do_lower_case must be true or false, got 'false'"),
    (b'{"strip_accents": "no"}', "strip_accents must be true, false or null, got 'no'"),
    (b'{"tokenize_chinese_chars": 0}', "tokenize_chinese_chars must be true or false, got 0"),
], ids=["list", "null", "not-utf8", "string-false", "strip-accents", "chinese-chars"])
def test_a_tokenizer_config_that_is_not_an_object_of_booleans_is_a_model_format_error(tmp_path, content, message):
    """A list or null was an AttributeError, bad bytes a UnicodeDecodeError, and "false" (a string) read as true."""
    from structsent.errors import ModelFormatError

    from .conftest import write_tokenizer_files

    write_tokenizer_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_bytes(content)
    with pytest.raises(ModelFormatError, match=r"tokenizer_config.json: " + message.replace("(", r"\(")):
        Tokenizer.from_dir(tmp_path)


def test_do_lower_case_false_keeps_capitals(tmp_path):
    from .conftest import write_tokenizer_files

    write_tokenizer_files(tmp_path)
    lower = Tokenizer.from_dir(tmp_path).encode(["ABC"])[0].sequences[0]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    kept = Tokenizer.from_dir(tmp_path).encode(["ABC"])[0].sequences[0]
    assert list(lower) != list(kept)


@pytest.mark.parametrize("options", [{"strip_accents": False}, {"strip_accents": True, "do_lower_case": False},
                                     {"tokenize_chinese_chars": False}, {"do_lower_case": False}])
def test_the_tokenizer_options_of_tokenizer_config_give_the_ids_transformers_gives(tmp_path, options):
    """Only do_lower_case was read: strip_accents false kept "Café" whole where transformers gives
    [UNK], tokenize_chinese_chars false split 很好吃 where transformers keeps it one word."""
    import json

    transformers = pytest.importorskip("transformers")
    from .conftest import write_tokenizer_files

    write_tokenizer_files(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **options}), encoding="utf-8")
    reference = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_dir(tmp_path)
    for text in ["Café很好吃", "ÉCOLE 的 naïve 评价", "很好吃，但是太贵了", "Ｆｕｌｌ width ＡＢＣ"]:
        assert list(ours.encode([text], max_length=512)[0].sequences[0]) == reference(text)["input_ids"], text

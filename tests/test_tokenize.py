import pytest

from structsent.config import LongTextPolicy
from structsent.tokenize import Tokenizer, split_windows

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
    assert enc.sequences == clean.sequences


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

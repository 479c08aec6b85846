"""The pure text generators of the default model's build (scripts/default_model/data.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from default_model import data as D  # noqa: E402

WORDS = {
    "a": (["好", "差", "漂亮", "难看"], [3.0, 2.0, 1.0, 1.0]),
    "n": (["异味", "色差", "质量"], [1.0, 1.0, 5.0]),
    "nr": (["张三"], [9.0]),
}


def test_lexicon_candidates_keeps_only_the_chosen_parts_of_speech():
    assert D.lexicon_candidates(WORDS) == sorted(["好", "差", "漂亮", "难看", "异味", "色差", "质量"])


def test_polar_lexicon_takes_the_extremes_of_the_teacher_scores():
    words = ["好", "差", "漂亮", "难看", "质量"]
    neg, pos = D.polar_lexicon(words, [2.0, -3.0, 1.5, -1.0, 0.1], k=2)
    assert neg == ["差", "难看"]
    assert pos == ["漂亮", "好"]


def test_polar_texts_put_polar_words_in_review_like_clauses():
    neg, pos = ["异味", "卡顿", "掉色"], ["好用", "清晰", "舒服"]
    train = ["房间很干净。", "书的纸张太差了，不推荐"]
    texts = D.polar_texts(neg, pos, train, 500, seed=3)
    assert texts == D.polar_texts(neg, pos, train, 500, seed=3)
    assert 400 <= len(texts) <= 500 and len(set(texts)) == len(texts)
    assert not set(texts) & set(train)
    assert all(any(w in t for w in neg + pos) for t in texts)
    negated = [t for t in texts if any(g + w in t for g in D.NEGATORS for w in neg)]
    assert len(negated) > 50, "complaint words under negation must be common"
    assert any("，" in t for t in texts) and any(len(t) <= 4 for t in texts)


def test_drop_near_duplicates_removes_texts_close_to_a_reference():
    refs = ["面料舒服，不起球", "物流太慢了"]
    texts = ["面料舒服，不起球！", "电池很耐用", "物流太慢", "外卖送得快"]
    assert D.drop_near_duplicates(texts, refs) == ["电池很耐用", "外卖送得快"]
    assert D.drop_near_duplicates(texts, refs, threshold=1.0) == texts

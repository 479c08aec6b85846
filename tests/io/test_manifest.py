"""The resume manifest and the input ledger."""

import hashlib
import json

import pytest

from structsent.errors import BadInputError
from structsent.io.manifest import InputLedger, Manifest, input_fingerprint, model_fingerprint


def test_manifest_round_trips_and_refuses_another_version(tmp_path):
    path = tmp_path / "out.manifest.json"
    manifest = Manifest(input_fingerprint={"path": "x"}, model_fingerprint="m", options={"a": "1"},
                        header=["id", "text"], position=42, line=3, rows_done=2, output_bytes=100)
    manifest.save(path)
    assert Manifest.load(path) == manifest and not path.with_name(path.name + ".tmp").exists()
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 1}))
    with pytest.raises(BadInputError, match="written by another structsent version"):
        Manifest.load(path)
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="unreadable resume manifest"):
        Manifest.load(path)


@pytest.mark.parametrize("edit", [[], "x", {"input_fingerprint": []}, {"rows_done": "3"}, {"rows_done": -1},
                                  {"position": True}, {"header": [1, 2]}, {"counts": None}, {"extra": 1},
                                  {"options": ["x"]}])
def test_a_manifest_of_the_wrong_shape_is_a_one_line_refusal(tmp_path, edit):
    path = tmp_path / "out.manifest.json"
    Manifest(input_fingerprint={"path": "x"}, model_fingerprint="m", options={}).save(path)
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, **edit} if isinstance(edit, dict) else edit))
    with pytest.raises(BadInputError, match="unreadable resume manifest .*; start over with --overwrite"):
        Manifest.load(path)


def test_input_fingerprint_changes_when_the_file_does(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"text\na\n")
    before = input_fingerprint(str(path))
    path.write_bytes(b"text\nb\n")
    assert input_fingerprint(str(path))["head_sha256"] != before["head_sha256"]
    assert input_fingerprint("-") == {"path": "-"}


def ledger_for(tmp_path, data: bytes, cuts: list[int]) -> tuple[InputLedger, int]:
    """A ledger whose chunks end at ``cuts`` (one row and one line per chunk)."""
    ledger = InputLedger(tmp_path / "out.inputs")
    entries, start = b"", 0
    for rows, end in enumerate(cuts, 1):
        entries += ledger.entry(rows, end, rows, hashlib.blake2b(data[start:end], digest_size=16).hexdigest())
        start = end
    ledger.path.write_bytes(entries + b"junk after the committed length")
    return ledger, len(entries)


def test_ledger_accepts_the_unchanged_prefix(tmp_path):
    data = b"a\nbb\nccc\nmore that was never committed\n"
    (tmp_path / "in.txt").write_bytes(data)
    ledger, length = ledger_for(tmp_path, data, [2, 5, 9])
    ledger.verify(str(tmp_path / "in.txt"), length)
    assert [e[:3] for e in ledger.entries(length)] == [(1, 2, 1), (2, 5, 2), (3, 9, 3)]


def test_ledger_names_the_rows_that_changed(tmp_path):
    data = b"a\nbb\nccc\n"
    ledger, length = ledger_for(tmp_path, data, [2, 5, 9])
    (tmp_path / "in.txt").write_bytes(b"a\nbX\nccc\n")
    with pytest.raises(BadInputError, match=r"rows 2-2 \(lines 2-2\) differ"):
        ledger.verify(str(tmp_path / "in.txt"), length)
    (tmp_path / "in.txt").write_bytes(b"a\n")  # cut short
    with pytest.raises(BadInputError, match="rows 2-2"):
        ledger.verify(str(tmp_path / "in.txt"), length)


def test_ledger_shorter_than_the_manifest_says_is_refused(tmp_path):
    ledger, length = ledger_for(tmp_path, b"a\n", [2])
    ledger.path.write_bytes(ledger.path.read_bytes()[:10])
    with pytest.raises(BadInputError, match="shorter than the manifest says"):
        ledger.entries(length)


def test_the_model_fingerprint_tells_packed_from_padded_attention(hf_model_dir):
    """Packed and padded fp16 logits differ in the last digits: a job begun one way resumes only the
    same way. A padded run's fingerprint is the one written before attention was reported."""
    info = {"labels": ["负面", "正面"], "backend": "torch", "precision": "fp16", "max_length": 512,
            "long_text": "truncate", "pad_multiple": None}
    unreported = model_fingerprint(hf_model_dir, info)
    assert model_fingerprint(hf_model_dir, {**info, "attention": "padded"}) == unreported
    assert model_fingerprint(hf_model_dir, {**info, "attention": "packed"}) != unreported


def test_the_model_fingerprint_names_the_int8_recipe_for_int8_only(hf_model_dir, monkeypatch):
    """int8's numbers change with its recipe: a job begun under one resumes only under the same one.
    Other precisions keep the fingerprints they had before the recipe was named."""
    from structsent.io import manifest

    info = {"labels": ["负面", "正面"], "backend": "onnx", "max_length": 512, "long_text": "truncate",
            "pad_multiple": None, "attention": "padded"}
    before = {p: model_fingerprint(hf_model_dir, {**info, "precision": p}) for p in ("fp32", "bf16", "fp16", "int8")}
    monkeypatch.setattr(manifest, "INT8_RECIPE", "another recipe")
    after = {p: model_fingerprint(hf_model_dir, {**info, "precision": p}) for p in before}
    assert after["int8"] != before["int8"]
    assert all(after[p] == before[p] for p in ("fp32", "bf16", "fp16"))
    # the fp32 fingerprint has no recipe key in its hash
    unnamed = {key: info.get(key) for key in ("labels", "backend", "precision", "max_length", "long_text",
                                               "pad_multiple")}
    assert before["fp32"] == _fingerprint_without_recipe(hf_model_dir, {**unnamed, "precision": "fp32"})


def _fingerprint_without_recipe(directory, relevant: dict) -> str:
    import hashlib
    import json

    from structsent.models import files_a_load_reads

    digest = hashlib.blake2b(digest_size=32)  # the fingerprint's formula, with no recipe key added
    for file in files_a_load_reads(directory):
        digest.update(f"{file.name}:{file.stat().st_size}:".encode() + file.read_bytes())
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    return digest.hexdigest()


def test_the_model_fingerprint_follows_the_contents_not_the_file_times(hf_model_dir, tmp_path):
    """The same model copied or installed again (new modification times) is the same model; a
    changed weight is not."""
    import os
    import shutil

    info = {"labels": ["负面", "正面"], "backend": "torch", "precision": "fp32", "max_length": 512}
    copy = tmp_path / "copy"
    shutil.copytree(hf_model_dir, copy)
    for file in copy.iterdir():
        os.utime(file, ns=(1, 1))
    assert model_fingerprint(copy, info) == model_fingerprint(hf_model_dir, info)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy, info) != model_fingerprint(hf_model_dir, info)


def test_a_refused_resume_names_the_settings_changed_not_those_they_imply():
    from structsent.io.manifest import changed_settings

    int8 = {"labels": ["a", "b"], "precision": "int8", "int8_recipe": "r", "token_budget": 4096, "max_batch_size": 64,
            "batch_overhead_tokens": 32, "pad_multiple": 8, "chunk_rows": 2048, "max_length": 512,
            "long_text": "truncate"}
    fp32 = {"labels": ["a", "b"], "precision": "fp32", "pad_multiple": 8, "max_length": 512, "long_text": "truncate"}
    assert changed_settings(int8, fp32) == "--precision was 'int8', now 'fp32'"
    assert changed_settings(int8, {**int8, "chunk_rows": 7}) == "--chunk-rows was 2048, now 7"
    windows = {**fp32, "long_text": "windows", "window_stride": 255}
    assert changed_settings(windows, {**windows, "max_length": 256, "window_stride": 127}) == \
        "--max-length was 512, now 256"
    assert changed_settings(None, fp32) is None
    # options as the command line names them: the input's format is --format; an option not given is said so
    options = {"input_format": "csv", "id_column": None, "on_bad_row": "error"}
    assert changed_settings(options, {**options, "input_format": "tsv", "id_column": "n"}) == \
        "--format was 'csv', now 'tsv'; --id-column was not given, now 'n'"
    # attention is saved only when packed (absent: padded); label's pad multiple steps aside for packed
    packed = {**fp32, "backend": "torch", "attention": "packed", "pad_multiple": None}
    padded = {**fp32, "backend": "torch"}
    assert changed_settings(packed, padded) == "--attention was 'packed', now 'padded'"
    assert changed_settings(padded, packed) == "--attention was 'padded', now 'packed'"


def test_an_int8_packed_job_does_not_depend_on_the_planner_s_per_call_cost(hf_model_dir):
    """Packed batches are filled in real tokens whatever --batch-overhead-tokens says: the engine
    reports no per-call cost then, so a resume with another one is not refused for it."""
    import structsent
    from structsent.io.manifest import model_settings

    packed = structsent.load(hf_model_dir, device="cpu", backend="torch", precision="int8")
    other = structsent.load(hf_model_dir, device="cpu", backend="torch", precision="int8", batch_overhead_tokens=500)
    padded = structsent.load(hf_model_dir, device="cpu", backend="torch", precision="int8", attention="padded")
    assert packed.batch_overhead is None and packed.info()["batch_overhead_tokens"] is None
    assert model_settings(packed.info(), chunk_rows=100) == model_settings(other.info(), chunk_rows=100)
    assert padded.info()["batch_overhead_tokens"] == 32



def test_the_model_fingerprint_reads_only_the_files_a_load_reads(hf_model_dir, tmp_path):
    """Every file in the directory was read in full at every job: a 50 GB training log beside the
    weights stalled the job for minutes (and past a stop signal); the same weights in another
    format, a README, a log change no result and no longer change the fingerprint."""
    import shutil

    import torch

    info = {"labels": ["负面", "正面"], "backend": "torch", "precision": "fp32", "max_length": 512}
    copy = tmp_path / "copy"
    shutil.copytree(hf_model_dir, copy)
    before = model_fingerprint(copy, info)
    (copy / "README.md").write_text("notes")
    (copy / "training_log.bin").write_bytes(b"\0" * 4096)
    torch.save({"unused": torch.zeros(3)}, copy / "pytorch_model.bin")  # safetensors is what a load reads
    assert model_fingerprint(copy, info) == before
    (copy / "tokenizer_config.json").write_text('{"do_lower_case": false}')  # read by a load: counts
    assert model_fingerprint(copy, info) != before

"""The benchmark scripts run end to end on a few rows (their figures are not checked: they are
measurements, printed with the host they were taken on)."""

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name, *args, timeout=300):
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_feed_bench_compares_the_instant_model_job_with_tokenization_alone():
    out = run_script("feed_bench.py", "--rows", "300", "--threads", "1", "--rounds", "1")
    assert "ISA " in out
    for what in ("tokenize: Rust encode_batch", "tokenize: vectorised (CharTable)",
                 "job: instant model, vectorised tokenizer", "job: instant model, Rust tokenizer"):
        assert f"threads 1 round 1: {what}" in out, out
    assert "ratio job: instant model, vectorised tokenizer / vectorised tokenization: wall" in out
    assert "ratio job: instant model, vectorised tokenizer / fastest Rust tokenization: wall" in out


def test_pipeline_bench_times_the_model_and_the_label_job():
    out = run_script("pipeline_bench.py", "--rows", "60", "--rounds", "1")
    assert "host: CPU " in out and "ISA " in out
    assert "model only, pre-tokenized:" in out and "label job (CSV in, CSV out; tokenizer processes: 0):" in out
    assert "ratio label job / model only:" in out


def test_packed_bench_compares_packed_with_padded_attention(hf_model_dir):
    out = run_script("packed_bench.py", "--model", str(hf_model_dir), "--texts", "40", "--call-sizes", "7",
                     "--rounds", "1")
    assert "host: CPU " in out and "ISA " in out
    lines = [line for line in out.splitlines() if line.startswith("fp32, 40 reviews in ")]
    assert [line.split(":")[0] for line in lines] == ["fp32, 40 reviews in calls of 7", "fp32, 40 reviews in one call"]
    for line in lines:
        assert "padded " in line and "packed " in line and "label(s) differ" in line, line
        difference = float(line.split("largest probability difference ")[1].split(",")[0])
        assert difference < 1e-5, line  # fp32: the same maths either way

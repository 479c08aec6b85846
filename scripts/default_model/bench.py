"""Throughput and agreement of the student on long reviews with the library-style CPU path:
texts sorted by length, batches under a padded-token budget, torch fp32 / bf16 or ONNX
Runtime int8 (dynamic quantisation)."""
from __future__ import annotations

import os
import time

import numpy as np
import torch


def plan_batches(lengths, budget=4096):
    order = np.argsort(lengths, kind="stable")[::-1]
    batches, cur, cur_max = [], [], 0
    for i in order:
        L = int(lengths[i])
        m = max(cur_max, L)
        if cur and m * (len(cur) + 1) > budget:
            batches.append(cur); cur, m = [], L
        cur.append(int(i)); cur_max = m
    if cur:
        batches.append(cur)
    return batches


def _pad(enc_ids, b):
    L = max(len(enc_ids[i]) for i in b)
    ids = np.zeros((len(b), L), dtype=np.int64)
    mask = np.zeros((len(b), L), dtype=np.int64)
    for r, i in enumerate(b):
        ids[r, :len(enc_ids[i])] = enc_ids[i]; mask[r, :len(enc_ids[i])] = 1
    return ids, mask


def tokenize(tokenizer, texts, max_len=512):
    return tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]


def run_torch(model, enc_ids, budget=4096, dtype=torch.float32):
    lengths = np.array([len(x) for x in enc_ids])
    logits = np.zeros((len(enc_ids), model.config.num_labels), dtype=np.float32)
    m = model if dtype == torch.float32 else model.to(dtype)
    with torch.inference_mode():
        for b in plan_batches(lengths, budget):
            ids, mask = _pad(enc_ids, b)
            out = m(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            logits[b] = out.float().numpy()
    if dtype != torch.float32:
        model.to(torch.float32)
    return logits


def export_onnx_int8(model, workdir):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    os.makedirs(workdir, exist_ok=True)
    fp32 = os.path.join(workdir, "model.onnx")
    int8 = os.path.join(workdir, "model-int8.onnx")
    ids = torch.ones((2, 16), dtype=torch.long)
    model.eval()
    torch.onnx.export(model, (ids, torch.ones_like(ids)), fp32, dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                    "logits": {0: "b"}})
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fp32, int8


def run_onnx(path, enc_ids, budget=4096, threads=2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    lengths = np.array([len(x) for x in enc_ids])
    logits = np.zeros((len(enc_ids), 2), dtype=np.float32)
    for b in plan_batches(lengths, budget):
        ids, mask = _pad(enc_ids, b)
        logits[b] = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    return logits


def timed(fn, *a, **k):
    t = time.perf_counter(); r = fn(*a, **k); return r, time.perf_counter() - t

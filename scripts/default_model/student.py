"""The student: a standard BertForSequenceClassification over the bert-base-chinese character
vocabulary, initialised from the teacher (multilingual-e5-small)."""
from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

ID2LABEL = {0: "负面", 1: "正面"}

SPECIAL = {"[PAD]": "<pad>", "[UNK]": "<unk>", "[CLS]": "<s>", "[SEP]": "</s>", "[MASK]": "<mask>"}


def student_config(n_layers: int, teacher_cfg) -> BertConfig:
    return BertConfig(
        vocab_size=21128, hidden_size=teacher_cfg.hidden_size, num_hidden_layers=n_layers,
        num_attention_heads=teacher_cfg.num_attention_heads,
        intermediate_size=teacher_cfg.intermediate_size, max_position_embeddings=512,
        type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, classifier_dropout=0.1,
        num_labels=2, id2label=dict(ID2LABEL), label2id={v: k for k, v in ID2LABEL.items()},
        architectures=["BertForSequenceClassification"],
    )


def map_vocab(vocab, tt):
    """For each BERT vocab entry, the teacher piece ids whose mean gives its initial embedding.
    Preference: exact piece "X", then "\u2581X", then the teacher's own tokenization of X."""
    piece_id = {p: i for i, p in enumerate(tt.pieces)}
    out, stats = [], {"exact": 0, "meta": 0, "split": 0, "unk": 0}
    fallback = []
    for v in vocab:
        if v in SPECIAL:
            out.append([piece_id[SPECIAL[v]]]); stats["exact"] += 1; continue
        s = v[2:] if v.startswith("##") and len(v) > 2 else v
        if s.startswith("[unused") or (s.startswith("[") and s.endswith("]")):
            out.append([piece_id["<unk>"]]); stats["unk"] += 1; continue
        if s in piece_id:
            out.append([piece_id[s]]); stats["exact"] += 1
        elif "\u2581" + s in piece_id:
            out.append([piece_id["\u2581" + s]]); stats["meta"] += 1
        else:
            out.append(None); fallback.append((len(out) - 1, s))
    if fallback:
        ids = tt.content_ids([s for _, s in fallback])
        for (k, s), seq in zip(fallback, ids):
            seq = [i for i in seq if tt.pieces[i] != "\u2581"] or [piece_id["<unk>"]]
            out[k] = seq
            stats["unk" if seq == [piece_id["<unk>"]] else "split"] += 1
    return out, stats


def build_student(teacher, tt, vocab, layers, lr_w=None, lr_b=None):
    cfg = student_config(len(layers), teacher.config)
    st = BertForSequenceClassification(cfg)
    tsd = teacher.state_dict()
    W = tsd["embeddings.word_embeddings.weight"]
    mapping, stats = map_vocab(vocab, tt)
    E = torch.stack([W[torch.tensor(ids)].mean(0) for ids in mapping])
    sd = {"bert.embeddings.word_embeddings.weight": E,
          "bert.embeddings.position_embeddings.weight": tsd["embeddings.position_embeddings.weight"][:512],
          "bert.embeddings.token_type_embeddings.weight": tsd["embeddings.token_type_embeddings.weight"],
          "bert.embeddings.LayerNorm.weight": tsd["embeddings.LayerNorm.weight"],
          "bert.embeddings.LayerNorm.bias": tsd["embeddings.LayerNorm.bias"]}
    for j, l in enumerate(layers):
        for k, v in tsd.items():
            if k.startswith(f"encoder.layer.{l}."):
                sd["bert.encoder.layer.%d.%s" % (j, k[len(f"encoder.layer.{l}."):])] = v
    # pooler starts as identity so [CLS]'s state feeds the head unchanged (tanh aside)
    sd["bert.pooler.dense.weight"] = torch.eye(cfg.hidden_size)
    sd["bert.pooler.dense.bias"] = torch.zeros(cfg.hidden_size)
    if lr_w is not None:
        sd["classifier.weight"] = torch.as_tensor(lr_w, dtype=torch.float32)
        sd["classifier.bias"] = torch.as_tensor(lr_b, dtype=torch.float32)
    missing, unexpected = st.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    return st, stats

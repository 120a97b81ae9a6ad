"""Retrieval evaluation of a trained run: word images as queries, lexicon text embeddings as the gallery.

Protocol (DESIGN.md §2): within-language, the gallery is the query language's lexicon entries; cross-lingual,
it is another language's entries, and a hit is the same semantic ID (six directions en→zh, zh→en, zh→es,
es→zh, es→en, en→es, where the evaluation set holds the query language). The gallery covers the semantic
IDs present in the evaluation set, or the whole lexicon with `whole_lexicon`. R/D is computed on the image
embeddings grouped by semantic ID, across languages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from synth.dataset.manifest import config_differences
from synth.lexicon import Lexicon
from train.config import config_from_dict, workers_refusal
from train.metrics import (
    accuracy_at_k,
    mrr,
    normalise,
    normalized_edit_similarity,
    radius_distance_ratio,
    ranks,
)
from train.run.checkpoint import CONFIG, FINAL_INFO, CheckpointError, model_weights, read_run_config
from train.run.data import DataError, ShardStream, find_shards
from train.run.distributed import resolve_device
from train.towers.model import DualEncoder

LANG_ORDER = ("en", "es", "zh")
DIRECTIONS = (("en", "zh"), ("zh", "en"), ("zh", "es"), ("es", "zh"), ("es", "en"), ("en", "es"))
KS = (1, 3, 5)
# Images per forward pass when none is asked for: 256 on a GPU; on a CPU about half a million input pixels
# (32 images at 64×256, 128 at 32×128), so that a pass's activations stay in cache. At 64×256 on 2 cores,
# PyTorch ran batches of 256 at less than half the speed of batches of 32 (docs/benchmarks.md).
GPU_BATCH = 256
CPU_BATCH_PIXELS = 1 << 19


def default_batch_size(device: torch.device, height: int, width: int) -> int:
    return GPU_BATCH if device.type == "cuda" else max(1, CPU_BATCH_PIXELS // (height * width))


def _recorded(record: dict, dotted: str) -> bool:
    """Whether `record` holds the "model."-prefixed key `dotted`."""
    for part in dotted.split(".")[1:]:
        if not isinstance(record, dict) or part not in record:
            return False
        record = record[part]
    return True


def load_model(target: Path, text_encoder: Path | None = None, device: str | None = None,
               lexicon: Lexicon | None = None) -> tuple[DualEncoder, dict, Path]:
    """A run's (or checkpoint's) model in eval mode, with the run's recorded provenance and its folder.

    Refused: final weights whose model.json records another model than the run's config.json (weights
    copied from another run), and a `lexicon` other than the one the run was trained with."""
    run, weights = model_weights(target)
    provenance = read_run_config(run)
    config = config_from_dict(provenance["config"], str(run))
    info = run / FINAL_INFO
    trained = json.loads(info.read_text(encoding="utf-8")).get("model") if info.is_file() else None
    diffs = [key for key in config_differences(trained, config.to_dict()["model"], "model.")
             if _recorded(trained, key)] if trained else []  # keys added since the run take their defaults
    if diffs and Path(target).resolve() == run.resolve():
        raise CheckpointError(f"{info}: the final weights were trained with another {', '.join(diffs[:3])} than "
                              f"{run / CONFIG} says; they belong to another run")
    recorded = provenance.get("lexicon", {})
    if lexicon is not None and recorded.get("sha256") not in (None, lexicon.sha256):
        raise CheckpointError(f"`lexicon` {lexicon.path} is not the lexicon {run} was trained with "
                              f"({recorded.get('file')}, sha256 {recorded['sha256'][:12]}…); pass that one")
    encoder = Path(text_encoder) if text_encoder else Path(provenance["text_encoder"]["path"])
    if not encoder.is_dir():
        raise CheckpointError(f"the run's text encoder folder is gone: {encoder}; pass its new place as `text_encoder`")
    model = DualEncoder(config.model, encoder)
    model.load_saved_state(weights, str(target))
    dev = resolve_device(device)
    return model.to(dev).eval(), provenance, run


@torch.no_grad()
def embed_images(model: DualEncoder, roots: Sequence[Path], batch_size: int | None = None, workers: int = 0,
                 langs: Sequence[str] | None = None, progress=None) -> dict[str, np.ndarray]:
    """Image embeddings (N, D) with their semantic IDs, languages, texts and keys (shard file, row in it),
    streamed from the shards, `batch_size` images per pass (default: `default_batch_size`)."""
    refusal = workers_refusal(workers)
    if refusal:
        raise DataError(f"`workers`: {refusal}")
    shards = [p for root in roots for p in find_shards(Path(root))]
    c = model.config.image
    device = next(model.parameters()).device
    batch_size = batch_size or default_batch_size(device, c.image_height, c.image_width)
    stream = ShardStream(shards, c.image_height, c.image_width, batch_size, langs, c.crop)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    embeds, sids, tags, texts, shard_of, rows = [], [], [], [], [], []
    for batch in loader:
        embeds.append(model.image(batch["images"].to(device)).float().cpu().numpy())
        sids.append(np.asarray(batch["semantic_ids"]))
        tags.append(np.asarray(batch["langs"]))
        texts += batch["texts"]
        shard_of += [batch["shard"]] * len(sids[-1])
        rows.append(np.asarray(batch["rows"]))
        if progress:
            progress(len(sids[-1]))
    if not embeds:
        raise DataError(f"no images in {', '.join(map(str, roots))}" + (f" for languages {', '.join(langs)}" if langs else ""))
    return {"embeds": np.concatenate(embeds), "semantic_ids": np.concatenate(sids), "langs": np.concatenate(tags),
            "texts": texts, "shards": shard_of, "rows": np.concatenate(rows)}


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: list[str], batch_size: int = 512) -> np.ndarray:
    out = [model.text.encode(texts[i: i + batch_size]).float().cpu().numpy() for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.config.image.embed_dim), np.float32)


def retrieval_scores(r: np.ndarray, nes: np.ndarray) -> dict:
    """Acc@k, MRR and NES (normalised edit similarity of the top-1 text to the truth, in the gallery's
    language: for a cross-lingual query, the truth is the translation)."""
    return {**{f"acc@{k}": accuracy_at_k(r, k) for k in KS}, "mrr": mrr(r), "nes": float(nes.mean()),
            "n_queries": int(r.size)}


def evaluate(model: DualEncoder, roots: Sequence[Path], lexicon: Lexicon, *, cross_lingual: bool = True,
             whole_lexicon: bool = False, batch_size: int | None = None, workers: int = 0, progress=None) -> dict:
    """The evaluation report (see the module docstring) as a JSON-ready dict."""
    started = time.perf_counter()
    images = embed_images(model, roots, batch_size, workers, progress=progress)
    emb, sids, langs = images["embeds"], images["semantic_ids"], images["langs"]
    if sids.max() >= len(lexicon):
        raise DataError(f"semantic ID {int(sids.max())} is not in the lexicon ({len(lexicon)} entries); "
                         "pass the lexicon the shards were rendered from as `lexicon`")
    gallery_ids = np.arange(len(lexicon)) if whole_lexicon else np.unique(sids)
    present = [lang for lang in LANG_ORDER if (langs == lang).any()]
    wanted = set(present) | ({b for a, b in DIRECTIONS if a in present} if cross_lingual else set())
    galleries = {lang: embed_texts(model, [lexicon.entries[i].text(lang) for i in gallery_ids]) for lang in sorted(wanted)}

    def rank(query_lang: str, gallery_lang: str) -> tuple[np.ndarray, np.ndarray]:
        """Ranks of the right entry, and the NES of the top-ranked entry's text against the truth."""
        q = langs == query_lang
        similarity = emb[q] @ galleries[gallery_lang].T
        texts = [normalise(lexicon.entries[i].text(gallery_lang), gallery_lang) for i in gallery_ids]
        top = similarity.argmax(axis=1)
        nes = [normalized_edit_similarity(texts[t], normalise(lexicon.entries[y].text(gallery_lang), gallery_lang))
               for t, y in zip(top.tolist(), sids[q].tolist())]
        return ranks(similarity, sids[q], gallery_ids), np.asarray(nes)

    within = {lang: rank(lang, lang) for lang in present}
    every = tuple(np.concatenate([w[i] for w in within.values()]) for i in (0, 1))
    report = {
        "n_images": len(sids),
        "languages": present,
        "gallery": {"kind": "lexicon" if whole_lexicon else "evaluation-set ids", "size": len(gallery_ids)},
        "within": {**{lang: retrieval_scores(*w) for lang, w in within.items()}, "all": retrieval_scores(*every)},
    }
    if cross_lingual:
        cross = {f"{a}→{b}": retrieval_scores(*rank(a, b)) for a, b in DIRECTIONS if a in present}
        if cross:
            cross["mean"] = {key: float(np.mean([v[key] for v in cross.values()])) for key in ("acc@1", "acc@3", "acc@5", "mrr", "nes")}
        report["cross"] = cross
    try:
        report["rd_ratio"] = radius_distance_ratio(emb, sids)
    except ValueError:
        report["rd_ratio"] = None  # every ID appears once: no intra-class radius to measure
    report["seconds"] = time.perf_counter() - started
    return report


def markdown(report: dict) -> str:
    """The report as Markdown tables (within-language, then cross-lingual)."""
    head = "| set | queries | Acc@1 | Acc@3 | Acc@5 | MRR | NES |\n|---|---:|---:|---:|---:|---:|---:|\n"

    def row(name: str, s: dict) -> str:
        n = f"{s['n_queries']:,}" if "n_queries" in s else ""
        return (f"| {name} | {n} | {s['acc@1']:.4f} | {s['acc@3']:.4f} | {s['acc@5']:.4f} | {s['mrr']:.4f} "
                f"| {s['nes']:.4f} |\n")

    lines = ["Within-language (query language = gallery language)\n\n", head]
    lines += [row(name, s) for name, s in report["within"].items()]
    if report.get("cross"):
        lines += ["\nCross-lingual (query → gallery language)\n\n", head]
        lines += [row(name, s) for name, s in report["cross"].items()]
    rd = report.get("rd_ratio")
    lines.append(f"\nGallery: {report['gallery']['size']:,} entries per language ({report['gallery']['kind']}); "
                 f"R/D ratio {rd:.4f}\n" if rd is not None else "\n")
    return "".join(lines)

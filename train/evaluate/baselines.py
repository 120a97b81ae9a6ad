"""Two-stage OCR retrieval baselines: recognise the word, then rank the gallery by edit similarity.

This is what a user without our model would do: run an off-the-shelf recogniser on each word image, then
pick the lexicon entry whose text is closest to what it read. The gallery and the ranking protocol are
`train.evaluate`'s (within-language; the query language's entries for the IDs in the set, or the whole
lexicon; pessimistic ties), and the score of gallery entry g for a prediction p is the normalised edit
similarity NES(p, g) = 1 − Lev(p, g) / max(|p|, |g|) after `normalise` (NFC, no spaces, case-folded for
English and Spanish). OCR has no cross-lingual mode: reading "agua" says nothing about "water".

Recognisers (each a callable: PNG buffers and a language → strings):
- RapidOCR (PyPI `rapidocr-onnxruntime`, PP-OCRv4 Chinese/English models in the wheel), recognition only
  (the images are already word crops, so no detection or angle stage).
- Tesseract 5 (Debian `tesseract-ocr` with `-eng`, `-spa`, `-chi-sim`): LSTM engine, page segmentation
  8 (one word) for English and Spanish, 7 (one line) for Chinese, whose words are several characters.
Both run single-threaded per process, so the per-image latency compares with our batch-1, one-thread
figure; `workers` processes share the images for throughput.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from hwkit.errors import UserError
from synth.lexicon import Lexicon
from train.evaluate import LANG_ORDER, retrieval_scores
from train.metrics import normalise, normalized_edit_similarity, ranks
from train.run.data import ShardSet

BASELINES = ("rapidocr", "tesseract")
TESSERACT_LANGS = {"en": "eng", "es": "spa", "zh": "chi_sim"}
TESSERACT_PSM = {"en": "8", "es": "8", "zh": "7"}


class BaselineError(UserError, RuntimeError):
    """A baseline cannot run (engine missing, bad output); the message says how to fix it."""


class RapidOCRRecogniser:
    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise BaselineError("rapidocr-onnxruntime is not installed; run `make setup` (it installs the "
                                "baselines), or `pip install --no-deps rapidocr-onnxruntime` plus the "
                                "`baselines` extra") from None
        self.engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)

    def version(self) -> str:
        from importlib.metadata import version

        return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}"

    def __call__(self, pngs: Sequence[np.ndarray], lang: str) -> list[str]:
        out = []
        for png in pngs:
            grey = cv2.imdecode(np.asarray(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            result, _ = self.engine(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), use_det=False, use_cls=False, use_rec=True)
            out.append(result[0][0] if result else "")
        return out


class TesseractRecogniser:
    name = "tesseract"

    def __init__(self, binary: str = "tesseract") -> None:
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise BaselineError(f"{binary} not found; install Debian's tesseract-ocr tesseract-ocr-spa "
                                "tesseract-ocr-chi-sim (`make setup` does)")
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True, check=False).stdout.split()
        self.installed = set(listed)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        return (out.splitlines() or ["tesseract"])[0]

    def __call__(self, pngs: Sequence[np.ndarray], lang: str) -> list[str]:
        code = TESSERACT_LANGS[lang]
        if code not in self.installed:
            raise BaselineError(f"tesseract has no {code} model; install tesseract-ocr-{code.replace('_', '-')}")
        # One process for the whole chunk (a file listing the images): the model loads once, and the
        # pages come back separated by form feeds.
        with tempfile.TemporaryDirectory(prefix="tess-") as tmp:
            paths = []
            for i, png in enumerate(pngs):
                path = Path(tmp) / f"{i:06d}.png"
                path.write_bytes(np.asarray(png, np.uint8).tobytes())
                paths.append(str(path))
            (Path(tmp) / "list.txt").write_text("\n".join(paths) + "\n")
            env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
            done = subprocess.run([self.binary, str(Path(tmp) / "list.txt"), "stdout", "-l", code, "--psm",
                                   TESSERACT_PSM[lang]], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise BaselineError(f"tesseract failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        pages = done.stdout.split("\f")[: len(pngs)]
        if len(pages) != len(pngs):
            raise BaselineError(f"tesseract returned {len(pages)} pages for {len(pngs)} images")
        return [page.strip() for page in pages]


RECOGNISERS: dict[str, Callable[[], object]] = {"rapidocr": RapidOCRRecogniser, "tesseract": TesseractRecogniser}

_worker: object | None = None


def _init_worker(name: str) -> None:
    global _worker
    _worker = RECOGNISERS[name]()


def _recognise_chunk(job: tuple[list[np.ndarray], str]) -> tuple[list[str], float]:
    pngs, lang = job
    started = time.perf_counter()
    texts = _worker(pngs, lang)
    return texts, time.perf_counter() - started


def pick_rows(shards: ShardSet, limit: int | None, seed: int) -> np.ndarray:
    """Row indices: all, or at most `limit` per language drawn without replacement (sorted)."""
    if not limit:
        return np.arange(len(shards))
    rng = np.random.default_rng(seed)
    picked = []
    for lang in LANG_ORDER:
        rows = np.flatnonzero(shards.langs == lang)
        picked.append(rows if len(rows) <= limit else rng.choice(rows, limit, replace=False))
    return np.sort(np.concatenate(picked))


def gallery_scores(predictions: Sequence[str], gallery: Sequence[str]) -> np.ndarray:
    """(Q, G) NES between normalised predictions and gallery texts (rapidfuzz: C++, all cores)."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    return cdist(list(predictions), list(gallery), scorer=Levenshtein.normalized_similarity, dtype=np.float32,
                 workers=-1)


def run_baseline(
    name: str,
    roots: Sequence[Path],
    lexicon: Lexicon,
    *,
    whole_lexicon: bool = False,
    limit: int | None = None,
    seed: int = 0,
    workers: int = 1,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
    recogniser: Callable | None = None,
) -> dict:
    """The baseline's report: within-language Acc@1/3/5, MRR, NES and per-image latency, and predictions.

    `recogniser` replaces the named engine (tests pass a stub); otherwise `workers` processes each build
    the engine once and read chunks of `chunk` images.
    """
    if recogniser is None and name not in RECOGNISERS:
        raise BaselineError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    started = time.perf_counter()
    shards = ShardSet.load(roots, lexicon)
    rows = pick_rows(shards, limit, seed)
    langs = shards.langs[rows]
    jobs, order = [], []
    for lang in LANG_ORDER:
        mine = rows[langs == lang]
        for i in range(0, len(mine), chunk):
            part = mine[i: i + chunk]
            jobs.append(([shards.png(r) for r in part], lang))
            order.append(part)
    predictions: dict[int, str] = {}
    seconds: dict[str, float] = dict.fromkeys(LANG_ORDER, 0.0)

    def collect(part: np.ndarray, lang: str, texts: list[str], took: float) -> None:
        predictions.update(zip(part.tolist(), texts, strict=True))
        seconds[lang] += took
        if progress:
            progress(len(part))

    engine = recogniser or RECOGNISERS[name]()  # built here first: a missing engine fails before any work
    if recogniser is not None or workers <= 1:
        for (pngs, lang), part in zip(jobs, order):
            tick = time.perf_counter()
            collect(part, lang, engine(pngs, lang), time.perf_counter() - tick)
    else:
        cv2.setNumThreads(1)  # before the fork: setting it in a child whose parent used the pool can deadlock
        with multiprocessing.get_context("fork").Pool(workers, _init_worker, (name,)) as pool:
            for (texts, took), (_, lang), part in zip(pool.imap(_recognise_chunk, jobs), jobs, order):
                collect(part, lang, texts, took)

    gallery_ids = np.arange(len(lexicon)) if whole_lexicon else np.unique(shards.semantic_ids)  # the whole set's IDs
    within, all_ranks, all_nes = {}, [], []
    for lang in LANG_ORDER:
        mine = rows[langs == lang]
        if not len(mine):
            continue
        pred = [normalise(predictions[r], lang) for r in mine.tolist()]
        truth = [normalise(t, lang) for t in shards.texts[mine]]
        gallery = [normalise(lexicon.entries[i].text(lang), lang) for i in gallery_ids]
        r = ranks(gallery_scores(pred, gallery), shards.semantic_ids[mine], gallery_ids)
        nes = np.array([normalized_edit_similarity(p, t) for p, t in zip(pred, truth)])
        within[lang] = retrieval_scores(r, nes) | {"latency_ms": 1000 * seconds[lang] / len(mine)}
        all_ranks.append(r)
        all_nes.append(nes)
    total_latency = 1000 * sum(seconds.values()) / len(rows)
    within["all"] = retrieval_scores(np.concatenate(all_ranks), np.concatenate(all_nes)) | {"latency_ms": total_latency}
    return {
        "baseline": name,
        "engine": engine.version() if hasattr(engine, "version") else name,
        "n_images": len(rows),
        "limit_per_language": limit,
        "languages": [lang for lang in LANG_ORDER if lang in within],
        "gallery": {"kind": "lexicon" if whole_lexicon else "evaluation-set ids", "size": len(gallery_ids)},
        "within": within,
        "workers": workers if recogniser is None else 1,
        "seconds": time.perf_counter() - started,
        "predictions": [{"row": int(r), "lang": str(shards.langs[r]), "text": str(shards.texts[r]),
                         "prediction": predictions[int(r)]} for r in rows],
    }


def markdown(report: dict) -> str:
    head = "| set | queries | Acc@1 | Acc@3 | Acc@5 | MRR | NES | ms/image |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    rows = [f"| {lang} | {s['n_queries']:,} | {s['acc@1']:.4f} | {s['acc@3']:.4f} | {s['acc@5']:.4f} | {s['mrr']:.4f} "
            f"| {s['nes']:.4f} | {s['latency_ms']:.1f} |\n" for lang, s in report["within"].items()]
    return (f"{report['baseline']} ({report['engine']}), within-language\n\n" + head + "".join(rows)
            + f"\nGallery: {report['gallery']['size']:,} entries per language ({report['gallery']['kind']})\n")

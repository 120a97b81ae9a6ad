"""OCR baselines: ranking logic with a stub recogniser against a brute-force ranking, then one real call of
each engine on rendered words."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from synth.dataset.shards import ShardConfig, sample_row, write_shard
from synth.lexicon import load_lexicon
from tests.train_fixtures import LEXICON, write_lexicon
from train.cli import app
from train.evaluate.baselines import run_baseline
from train.metrics import normalise, normalized_edit_similarity

LANGS = ("en", "es", "zh")


def printed(text: str) -> np.ndarray:
    """A clean printed word, dark on light, 64×256 (Hershey font: Latin only)."""
    image = np.full((64, 256), 255, np.uint8)
    cv2.putText(image, text, (12, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.3, 0, 3, cv2.LINE_AA)
    return image


def write_set(folder, ids=range(8), langs=LANGS):
    """One image per (ID, language): the English word, with the language code after it but in English."""
    rows = [sample_row(printed(LEXICON[i][0] + ("" if lang == "en" else f" {lang}")), {}, semantic_id=i, lang=lang, text=LEXICON[i][LANGS.index(lang)],
                       style="hershey", style_kind="outline", split="held-out", seed=0, png_level=1)
            for i in ids for lang in langs]
    (folder / "data").mkdir(parents=True)
    write_shard(folder / "data", "held_out-00000-of-00001.parquet", rows, ShardConfig())
    return folder


# what the stub "reads" for each true text: exact, near misses, garbage, empty
READS = {"water": "water", "child": "chlid", "year": "yeer", "fire": "", "mountain": "MOUNTAIN", "tree": "free",
         "one": "ono", "big": "xyz", "agua": "agua", "niño": "nino", "año": "ano", "fuego": "fuega", "montaña": "montana",
         "árbol": "arbol", "uno": "uno", "grande": "grand", "水": "水", "孩子": "孩", "年": "牛", "火": "大", "山": "山",
         "树": "", "一": "一", "大": "大"}


class Stub:
    """Decodes nothing: returns READS of the row's true text, found through the PNG bytes."""

    def __init__(self, truth_of_png: dict[bytes, str]):
        self.truth = truth_of_png
        self.calls = 0

    def __call__(self, pngs, lang):
        self.calls += 1
        return [READS[self.truth[bytes(np.asarray(p))]] for p in pngs]


def brute_rank(pred: str, truth_id: int, lang: str, gallery_ids) -> int:
    """1 + wrong gallery entries whose NES is ≥ the right one's, from the pure-Python Levenshtein."""
    score = {g: normalized_edit_similarity(normalise(pred, lang), normalise(LEXICON[g][LANGS.index(lang)], lang))
             for g in gallery_ids}
    return 1 + sum(1 for g in gallery_ids if g != truth_id and score[g] >= score[truth_id])


def test_ranking_matches_brute_force_with_a_stub(tmp_path):
    lexicon = load_lexicon(write_lexicon(tmp_path / "lexicon.tsv"))
    data = write_set(tmp_path / "set")
    from train.run.data import ShardSet

    shards = ShardSet.load([data], lexicon)
    truth = {bytes(shards.png(i)): str(t) for i, t in enumerate(shards.texts)}
    stub = Stub(truth)
    report = run_baseline("stub", [data], lexicon, recogniser=stub, chunk=5)
    assert stub.calls == 6  # 8 images per language in chunks of 5
    for lang in LANGS:
        texts = [LEXICON[i][LANGS.index(lang)] for i in range(8)]
        expected = [brute_rank(READS[t], i, lang, range(8)) for i, t in enumerate(texts)]
        got = report["within"][lang]
        assert got["acc@1"] == pytest.approx(np.mean(np.array(expected) == 1))
        assert got["acc@3"] == pytest.approx(np.mean(np.array(expected) <= 3))
        assert got["mrr"] == pytest.approx(np.mean(1 / np.array(expected)))
        nes = [normalized_edit_similarity(normalise(READS[t], lang), normalise(t, lang)) for t in texts]
        assert got["nes"] == pytest.approx(np.mean(nes))
        assert got["n_queries"] == 8 and got["latency_ms"] >= 0
    assert report["within"]["all"]["n_queries"] == 24
    assert {p["prediction"] for p in report["predictions"]} <= set(READS.values())

    # --limit draws per language, but the gallery stays the whole set's IDs
    small = run_baseline("stub", [data], lexicon, recogniser=Stub(truth), limit=3, seed=1)
    assert small["n_images"] == 9 and small["gallery"]["size"] == 8


def test_normalise():
    assert normalise(" Niño\u0303 ", "es") == normalise("niño\u0303", "es")
    assert normalise("A\u0301rbol", "es") == "árbol"  # NFC joins the combining accent
    assert normalise("孩 子", "zh") == "孩子"


def test_rapidocr_reads_a_rendered_word(tmp_path):
    lexicon = write_lexicon(tmp_path / "lexicon.tsv")
    data = write_set(tmp_path / "set", ids=[0, 4, 7], langs=("en",))  # water, mountain, big
    out = tmp_path / "rapid.json"
    result = CliRunner().invoke(app, ["baseline", "rapidocr", "--data", str(data), "--lexicon", str(lexicon),
                                      "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    tsv = out.with_suffix(".tsv").read_text().splitlines()
    reads = {line.split("\t")[2]: line.split("\t")[3] for line in tsv[1:]}
    assert reads["water"].lower() == "water" and reads["mountain"].lower() == "mountain", reads
    assert "| en | 3 | 1.0000" in result.output


def test_tesseract_reads_a_rendered_word(tmp_path):
    lexicon = load_lexicon(write_lexicon(tmp_path / "lexicon.tsv"))
    data = write_set(tmp_path / "set", ids=[0, 4], langs=("en",))
    report = run_baseline("tesseract", [data], lexicon, workers=2, chunk=1)  # two worker processes
    reads = [p["prediction"].lower() for p in report["predictions"]]
    assert "water" in reads[0] and "mountain" in reads[1], reads  # Tesseract may add a stray quote mark
    assert report["within"]["en"]["acc@1"] == 1.0 and report["engine"].startswith("tesseract 5")


def test_unknown_baseline_is_one_line(tmp_path):
    lexicon = write_lexicon(tmp_path / "lexicon.tsv")
    data = write_set(tmp_path / "set", ids=[0], langs=("en",))
    result = CliRunner().invoke(app, ["baseline", "abbyy", "--data", str(data), "--lexicon", str(lexicon)])
    assert result.exit_code == 1 and "unknown baseline 'abbyy'" in result.output

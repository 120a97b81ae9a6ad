"""The dataset card (README.md at the dataset root): what is in it, how to load it, where it came from.

Licences travel with the data: the card quotes the lexicon's NOTICE and, from fonts/LICENSES.md, the
rows and notes of exactly the font families the dataset uses.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from synth.dataset.plan import SPLIT_OF_SERIES, Plan
from synth.fonts.catalogue import Catalogue
from synth.lexicon import Lexicon
from synth.schema import HEIGHT, IMAGE, LANG, PARAMS, SCHEMA, SEED, SEMANTIC_ID, SPLIT, STYLE, STYLE_KIND, TEXT, WIDTH

_MEANING = {
    IMAGE: "the word image: PNG bytes, grayscale (Hugging Face Image feature; `path` is null)",
    SEMANTIC_ID: "lexicon row; equal for cross-lingual synonyms (en *water* = es *agua* = zh *水*)",
    LANG: "`en`, `es` or `zh`",
    TEXT: "the word as rendered",
    STYLE: "catalogue style id (one font face or pen-stroke font)",
    STYLE_KIND: "`outline` (font drawn by FreeType) or `stroke` (pen-stroke polylines)",
    SPLIT: "font split of the style: `train` or `held-out` (families are disjoint)",
    SEED: "the sample's own seed, derived from (master seed, semantic ID, language, style, index)",
    WIDTH: "image width in px",
    HEIGHT: "image height in px",
    PARAMS: "JSON of every random draw of the recipe, so the sample can be replayed",
}
_PER = {"per_style": "(entry, style) pair", "per_id": "(entry, language), spread evenly over the styles that can draw it"}


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _font_licences(licences_md: Path, used: dict[str, dict], catalogue: Catalogue) -> list[str]:
    """Rows of fonts/LICENSES.md for the families in use (and its notes on them); catalogue data if absent."""
    text = licences_md.read_text(encoding="utf-8") if licences_md.is_file() else ""
    header, rows, found = None, [], set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) >= 6 and cells[0] == "Family":
            header = line
        elif len(cells) >= 6 and not set(cells[0]) <= {"-", " "}:
            ids = {s.strip() for s in cells[1].split(",")}
            if ids & set(used):
                rows.append(line)
                found |= ids & set(used)
    ids_note = [p for p in text.split("\n\n") if p.startswith("Licence ids are")]
    lines = [*(ids_note[:1] + [""] if ids_note else []), header or "| Family | Styles | Split | Source package | Licence | Copyright / attribution |",
             "| --- | --- | --- | --- | --- | --- |", *rows]
    for style_id in sorted(set(used) - found):  # not listed in LICENSES.md: what the catalogue says
        s = catalogue.get(style_id)
        lines.append(f"| {s.family} | {s.id} | {s.split.value} | {s.source} `{s.package}` {s.version} | {s.licence} | — |")
    families = {info["family"] for info in used.values()}
    packages = {catalogue.get(style_id).package for style_id in used}
    notes = []
    for note in re.split(r"\n(?=- \*\*)", text.split("### Notes on individual licences", 1)[-1].split("\n## ", 1)[0]):
        bold = re.match(r"- \*\*(.+?)\*\*", note.strip())
        if not bold:
            continue
        named = bold.group(1)
        fontsource = "Fontsource" in named and any(p.startswith("@fontsource/") for p in packages)
        if fontsource or any(name in named for name in families | packages):
            notes.append(note.strip())
    return lines + ([""] + notes if notes else [])


def _columns_and_loading(meaning: dict[str, str]) -> list[str]:
    out = ["## Columns", ""] + _table(["column", "type", "meaning"],
                                      [[f"`{f.name}`", f"`{f.type}`", meaning[f.name]] for f in SCHEMA])
    return out + ["", "Rows are sorted by `semantic_id` inside each shard, and row groups carry statistics, so a "
                  "filter on `semantic_id` reads only the row groups it needs.", "", "## Loading", "", "```python",
                  "import datasets", 'ds = datasets.load_dataset("parquet", data_dir="THIS_FOLDER")  # PIL images',
                  "", "import pyarrow.dataset as pads", 'table = pads.dataset("THIS_FOLDER/data").to_table(',
                  '    filter=pads.field("semantic_id") < 100, columns=["semantic_id", "lang", "text"])', "```"]


_REAL_MEANING = {**_MEANING, STYLE: "the writer (`SOURCE:WRITER`; `unknown` where the source does not say)",
                 STYLE_KIND: "`real`: scanned or photographed handwriting", SPLIT: "`real`",
                 SEED: "the import's `--seed` where words are composed from characters (CASIA-HWDB), else 0",
                 PARAMS: "where the image came from in the source"}


def imported_card(manifest: dict) -> str:
    """README.md for real handwriting imported by `train import`: counts, columns, loading, and whose it is."""
    counts = manifest["counts"]
    langs = list(counts["by_lang"])
    out = ["---", "license: other", "language:", *[f"- {lang}" for lang in langs], "configs:",
           "- config_name: default", "  data_files:", "  - split: real", "    path: data/real-*", "---", "",
           "# Real handwriting word images", "",
           f"{counts['rows']:,} word images of {counts['ids']:,} lexicon entries by {counts['writers']:,} writer(s), "
           f"imported by `synth` {manifest['synth_version']} with", "", f"    {manifest['command']}", "",
           "Rows per language: " + ", ".join(f"{k} {v:,}" for k, v in counts["by_lang"].items()) + ". Words the "
           f"lexicon lacks are left out ({counts['unmapped']:,}; listed in `unmapped.tsv`); `manifest.json` holds "
           "the checksums `synth verify` checks.", ""]
    out += _columns_and_loading(_REAL_MEANING)
    return "\n".join(out + ["", "## Licence", "",
                            "The images are the source's, under its own terms (IAM and CASIA-HWDB are for "
                            "non-commercial research on registration); texts and semantic IDs come from the "
                            f"`synth` lexicon (`{manifest['lexicon']['file']}`, sha256 "
                            f"`{manifest['lexicon']['sha256']}`)."]) + "\n"


def dataset_card(manifest: dict, plan: Plan, lexicon: Lexicon, catalogue: Catalogue) -> str:
    """README.md for a dataset: columns, splits and counts, styles, loading, sources and licences."""
    counts, used = manifest["counts"], {k: v for k, v in manifest["styles"].items() if v["rows"]}
    series = Counter(e["name"].split("/")[1].split("-")[0] for e in manifest["shards"])
    rows_by_series = Counter()
    for e in manifest["shards"]:
        rows_by_series[e["name"].split("/")[1].split("-")[0]] += e["rows"]
    langs = list(counts["by_lang"])
    low, high = counts["ids"]
    out = ["---", "license: other", "language:", *[f"- {lang}" for lang in langs], "configs:",
           "- config_name: default", "  data_files:"]
    for name in series:
        out += [f"  - split: {name}", f"    path: data/{name}-*"]
    out += ["---", "", "# Synthetic handwriting word images", "",
            f"{counts['rows']:,} grayscale word images of lexicon entries {low}–{high - 1} in "
            f"{', '.join(langs)}, rendered by `synth` {manifest['synth_version']} with", "",
            f"    {manifest['command'] or '(library call)'}", "",
            f"Plan: {plan.config.samples} image(s) per {_PER[plan.config.mode]}, {plan.config.fonts} styles, master "
            f"seed {plan.config.seed}; distortion preset `{manifest['config']['render']['preset']}`. "
            f"`manifest.json` holds the full configuration, checksums of every shard, of the lexicon and of the "
            f"style catalogue; `synth verify` checks them.", "", "## Splits", ""]
    out += _table(["split (files)", "font split", "rows", "shards"],
                  [[f"`{name}` (`data/{name}-*.parquet`)", SPLIT_OF_SERIES[name], f"{rows_by_series[name]:,}", n]
                   for name, n in series.items()])
    out += ["", "Rows per language: " + ", ".join(f"{k} {v:,}" for k, v in counts["by_lang"].items()) + ".", "",
            f"(entry, style) pairs skipped because the style cannot draw every character: "
            f"{manifest['skipped']['pairs']:,}.", ""]
    out += _columns_and_loading(_MEANING)
    out += ["", f"## Styles used ({len(used)})", ""]
    out += _table(["style", "family", "kind", "split", "licence", "rows"],
                  [[k, v["family"], v["kind"], v["split"], v["licence"], f"{v['rows']:,}"] for k, v in used.items()])
    out += ["", "## Sources and licences", "", "### Lexicon", "",
            f"Texts and semantic IDs come from the `synth` lexicon (`{manifest['lexicon']['file']}`, sha256 "
            f"`{manifest['lexicon']['sha256']}`). Its notice (`lexicon/NOTICE`):", ""]
    notice = lexicon.path.parent / "NOTICE"
    out += (["```", notice.read_text(encoding="utf-8").rstrip(), "```"] if notice.is_file()
            else ["(no NOTICE file beside the lexicon used for this build)"])
    out += ["", "### Fonts and pen-stroke data", "",
            "Glyph shapes come from these font families (from `fonts/LICENSES.md`; the catalogue pins each "
            "file by sha256):", ""]
    out += _font_licences(catalogue.path.parent / "LICENSES.md", used, catalogue)
    return "\n".join(out) + "\n"

"""Real handwriting in: words from a source dataset → rows of the `synth` shard schema, split `real`.

The readers (`train.realdata.iam`, `train.realdata.hwdb`, `train.realdata.folder`) yield `RealWord`s; this
module maps each transcription to a semantic ID through the lexicon, counts and lists what does not map
(never guessing), decodes only the images that map, and writes a dataset folder that `train finetune`,
`train eval` and `synth verify` read unchanged:

    OUT/manifest.json    format synth-dataset/1, status complete, the source and its options, counts
    OUT/sizes.json       shard → rows
    OUT/unmapped.tsv     lang, text, count: every transcription the lexicon does not hold
    OUT/README.md        the dataset card (synth.dataset.card.imported_card)
    OUT/data/real-00000-of-0000N.parquet

The folder is built under a temporary name beside OUT and renamed into place at the end, so an error or
Ctrl-C leaves nothing behind. An existing OUT is never replaced unless asked, and then only if it is an
import written by this module.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from hwkit.errors import UserError
from hwkit.files import atomic_folder, files_besides, replace_refusal
from synth import __version__
from synth.dataset.card import imported_card
from synth.dataset.manifest import CARD, DATA, FORMAT, MANIFEST, SIZES, DatasetError, read_manifest, sizes, write_json
from synth.dataset.shards import ShardConfig, sample_row, write_shard
from synth.lexicon import LANGS, Lexicon
from synth.schema import SEMANTIC_ID

SPLIT_REAL = "real"
STYLE_KIND_REAL = "real"
SERIES_REAL = "real"
UNMAPPED = "unmapped.tsv"
CASE_FOLDED = ("en", "es")  # Latin-script languages: "The" finds "the"; accents must still match


class SourceError(UserError, ValueError):
    """A source dataset cannot be imported; the message names the file (and line or offset) and the fix."""


@dataclass(frozen=True)
class RealWord:
    """One handwritten word of a source dataset, its image not yet read.

    `load` returns the (H, W) uint8 grey image, dark ink on a light background; `source` is recorded as
    the row's params (file, line or offset, and whatever else identifies the sample).
    """

    text: str
    lang: str
    writer: str
    source: dict
    load: Callable[[], np.ndarray]
    seed: int = 0


def read_grey(path: Path, where: str) -> np.ndarray:
    """An image file as (H, W) uint8 grey; SourceError naming `where` if it is missing or unreadable."""
    if not path.is_file():
        raise SourceError(f"{where}: image {path} is missing")
    data = np.fromfile(path, dtype=np.uint8)
    grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if grey is None or grey.size == 0:
        raise SourceError(f"{where}: image {path} is not a readable image ({path.stat().st_size} bytes)")
    return grey


class LexiconMapper:
    """Transcription → semantic ID: exact match, then case-folded for English and Spanish."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        self.folded: dict[str, dict[str, int]] = {}
        for lang in CASE_FOLDED:
            table: dict[str, int] = {}
            for sid, text in enumerate(lexicon.texts(lang)):
                table.setdefault(text.casefold(), sid)
            self.folded[lang] = table

    def __call__(self, lang: str, text: str) -> int | None:
        try:
            return self.lexicon.id_of(lang, text)
        except KeyError:
            return self.folded[lang].get(text.casefold()) if lang in self.folded else None


@dataclass
class ImportResult:
    out: Path
    rows: int = 0
    shards: int = 0
    by_lang: Counter = field(default_factory=Counter)
    ids: int = 0
    writers: int = 0
    unmapped: Counter = field(default_factory=Counter)  # (lang, text) → count
    skipped: list[str] = field(default_factory=list)  # unreadable images passed over on request

    def summary(self) -> str:
        total = self.rows + sum(self.unmapped.values())
        return (f"{self.out}: {self.rows:,} of {total:,} words mapped to {self.ids:,} semantic IDs "
                f"({', '.join(f'{k} {v:,}' for k, v in sorted(self.by_lang.items()))}), {self.writers:,} writers, "
                f"{self.shards} shard(s); {sum(self.unmapped.values()):,} unmapped ({len(self.unmapped):,} distinct, "
                f"listed in {UNMAPPED})" + (f"; {len(self.skipped):,} unreadable image(s) skipped" if self.skipped else ""))


def write_real_dataset(
    words: Iterable[RealWord],
    out: Path,
    lexicon: Lexicon,
    config: dict,
    *,
    command: str = "",
    overwrite: bool = False,
    skip_unreadable: bool = False,
    rows_per_shard: int = 5000,
    shard_config: ShardConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Map, read and write every word of `words` to the dataset folder `out` (see the module docstring).

    `config` names the source and its options (recorded in the manifest). An image that cannot be read is
    an error naming it, or with `skip_unreadable` is counted and listed in the manifest. `progress(n)` is
    called once per source word.
    """
    out = Path(out)
    refusal = replace_refusal(out, overwrite, _is_import, "an import", "train import", _not_written_by_import)
    if refusal:
        raise SourceError(refusal)
    shard_config = shard_config or ShardConfig()
    mapper = LexiconMapper(lexicon)
    result = ImportResult(out)
    rows: list[dict] = []
    writers: set[str] = set()
    for word in words:
        if word.lang not in LANGS:
            raise SourceError(f"{word.source}: language {word.lang!r}; expected one of {', '.join(LANGS)}")
        sid = mapper(word.lang, word.text)
        if sid is None:
            result.unmapped[word.lang, word.text] += 1
        else:
            try:
                image = word.load()
            except SourceError as exc:
                if not skip_unreadable:
                    raise
                result.skipped.append(str(exc))
            else:
                rows.append(sample_row(image, word.source, semantic_id=sid, lang=word.lang, text=word.text,
                                       style=word.writer, style_kind=STYLE_KIND_REAL, split=SPLIT_REAL,
                                       seed=word.seed, png_level=shard_config.png_compression))
                writers.add(word.writer)
                result.by_lang[word.lang] += 1
        if progress:
            progress(1)
    if not rows and not result.unmapped and not result.skipped:
        raise SourceError("the source holds no words (an empty list, or a header with no rows under it)")
    if not rows and result.skipped:
        raise SourceError(f"every word the lexicon holds was unreadable ({len(result.skipped):,}; the first: "
                          f"{result.skipped[0]})")
    if not rows:
        raise SourceError(f"none of the {sum(result.unmapped.values()):,} words maps to the lexicon "
                           f"({lexicon.path.name}): check the source's language, or pass the right `lexicon`")
    rows.sort(key=lambda r: r[SEMANTIC_ID])  # stable: source order within an ID
    result.rows, result.ids, result.writers = len(rows), len({r[SEMANTIC_ID] for r in rows}), len(writers)
    _write(rows, out, lexicon, config, command, overwrite, rows_per_shard, shard_config, result)
    return result


def _not_written_by_import(folder: Path) -> list[str]:
    return [f for f in files_besides(folder, (MANIFEST, SIZES, UNMAPPED, CARD))
            if not (f.startswith(f"{DATA}/") and f.endswith(".parquet") and f.count("/") == 1)]


def _is_import(folder: Path) -> bool:
    try:
        return bool((read_manifest(folder) or {}).get("config", {}).get("source"))
    except DatasetError:
        return False


def _write(rows: list[dict], out: Path, lexicon: Lexicon, config: dict, command: str, overwrite: bool,
           rows_per_shard: int, shard_config: ShardConfig, result: ImportResult) -> None:
    with atomic_folder(out, overwrite) as tmp:
        (tmp / DATA).mkdir()
        chunks = [rows[i:i + rows_per_shard] for i in range(0, len(rows), rows_per_shard)]
        records = [write_shard(tmp / DATA, f"{SERIES_REAL}-{i:05d}-of-{len(chunks):05d}.parquet", chunk, shard_config)
                   for i, chunk in enumerate(chunks)]
        shards = [{**r.to_dict(), "name": f"{DATA}/{r.name}"} for r in records]
        digest = hashlib.sha256(json.dumps({"config": config, "lexicon": lexicon.sha256,
                                            "shards": [s["sha256"] for s in shards]}, sort_keys=True).encode())
        manifest = {
            "format": FORMAT, "status": "complete", "synth_version": __version__, "command": command,
            "fingerprint": digest.hexdigest(), "config": config,
            "lexicon": {"file": lexicon.path.name, "sha256": lexicon.sha256, "entries": len(lexicon)},
            "counts": {"rows": result.rows, "shards": len(shards), "ids": result.ids, "writers": result.writers,
                       "by_lang": dict(sorted(result.by_lang.items())), "by_split": {SPLIT_REAL: result.rows},
                       "unmapped": sum(result.unmapped.values()), "unmapped_distinct": len(result.unmapped)},
            "skipped_unreadable": result.skipped,
            "shards": shards,
        }
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / SIZES, sizes(manifest))
        (tmp / CARD).write_text(imported_card(manifest), encoding="utf-8")
        lines = ["lang\ttext\tcount"] + [f"{lang}\t{text}\t{n}" for (lang, text), n in
                                          sorted(result.unmapped.items(), key=lambda kv: (-kv[1], kv[0]))]
        (tmp / UNMAPPED).write_text("\n".join(lines) + "\n", encoding="utf-8")
    result.shards = len(shards)

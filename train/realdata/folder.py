"""Any user's handwriting: a CSV file listing `path,text,lang` (and optionally `writer`), one word image
per row. Relative paths are taken from the CSV file's folder; lang is en, es or zh."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from synth.lexicon import LANGS
from train.realdata import RealWord, SourceError, read_grey

REQUIRED = ("path", "text", "lang")


def folder_words(csv_path: Path) -> Iterator[RealWord]:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: no such CSV file; pass as `csv_path` a file of path,text,lang rows")
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{csv_path}: header lacks {', '.join(missing)}; the first line must name the columns "
                              f"path,text,lang (and optionally writer), got {reader.fieldnames}")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            path, text, lang = (row[c] or "" for c in REQUIRED)
            if lang not in LANGS:
                raise SourceError(f"{where}: lang {lang!r}; expected one of {', '.join(LANGS)}")
            if not text.strip() or not path.strip():
                raise SourceError(f"{where}: empty {'text' if path.strip() else 'path'}")
            image = Path(path) if Path(path).is_absolute() else base / path
            writer = (row.get("writer") or "").strip() or "unknown"
            yield RealWord(text=text.strip(), lang=lang, writer=f"folder:{writer}",
                           source={"dataset": "folder", "file": path, "line": reader.line_num},
                           load=lambda image=image, where=where: read_grey(image, where))

"""The trilingual lexicon: one row per semantic ID, the same concept in English, Spanish and Chinese.

The committed file (`lexicon/lexicon.tsv`) is the single source of truth downstream: the renderer draws
its texts and the trainer's gallery embeds them. It is validated strictly on load because a silent
defect here (two IDs sharing a word, a stray space) turns into mislabelled training pairs later.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hwkit.errors import UserError
from synth.fonts.charsets import gb2312_level1
from synth.paths import DEFAULT_LEXICON

LANGS = ("en", "es", "zh")
HEADER = ("semantic_id", *LANGS)
_ID = re.compile(r"0|[1-9][0-9]*")


class LexiconError(UserError, ValueError):
    """A lexicon file is missing or malformed; the message is one line, `{path}:{line}: {problem}`.

    Line numbers are 1-based file lines; 0 means the problem concerns the file as a whole (it is missing).
    """

    def __init__(self, path: Path | str, line: int, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}")


@dataclass(frozen=True)
class Entry:
    semantic_id: int
    en: str
    es: str
    zh: str

    def text(self, lang: str) -> str:
        """The entry's text in `lang` (one of LANGS)."""
        if lang not in LANGS:
            raise KeyError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
        return getattr(self, lang)


@dataclass(frozen=True)
class Lexicon:
    path: Path
    sha256: str
    entries: tuple[Entry, ...]
    # text -> semantic_id per language; derived, so left out of equality and repr.
    _index: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {lang: {e.text(lang): e.semantic_id for e in self.entries} for lang in LANGS}
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.entries)

    def texts(self, lang: str) -> list[str]:
        """All texts of `lang`, indexed by semantic ID."""
        return [e.text(lang) for e in self.entries]

    def id_of(self, lang: str, text: str) -> int:
        """Semantic ID of `text` in `lang`; KeyError if the lexicon does not hold it."""
        if lang not in LANGS:
            raise KeyError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
        try:
            return self._index[lang][text]
        except KeyError:
            raise KeyError(f"{lang} text {text!r} is not in the lexicon") from None

    def charset(self, lang: str) -> set[str]:
        """Distinct characters used by the texts of `lang`."""
        return {ch for text in self.texts(lang) for ch in text}


def load_lexicon(path: Path | None = None) -> Lexicon:
    """Read and validate a lexicon TSV (default: the committed `lexicon/lexicon.tsv`)."""
    path = Path(path) if path is not None else DEFAULT_LEXICON
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LexiconError(path, 0, "file not found") from None
    except OSError as exc:
        raise LexiconError(path, 0, f"cannot read file: {exc.strerror}") from None
    return Lexicon(path=path, sha256=hashlib.sha256(data).hexdigest(), entries=parse_lexicon(data, path))


def parse_lexicon(data: bytes, path: Path | str = "<lexicon>") -> tuple[Entry, ...]:
    """Validate the bytes of a lexicon TSV and return its entries in semantic-ID order."""
    if not data:
        raise LexiconError(path, 1, "empty file: expected a header line 'semantic_id<TAB>en<TAB>es<TAB>zh'")
    if data.startswith(b"\xef\xbb\xbf"):
        raise LexiconError(path, 1, "file starts with a UTF-8 byte-order mark; save it without one")
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the usual final newline, not an empty row
        lines.pop()
    _check_header(_decode(lines[0], path, 1), path)
    if len(lines) == 1:
        raise LexiconError(path, 1, "no entries after the header")

    entries: list[Entry] = []
    id_lines: dict[int, int] = {}
    text_lines: dict[str, dict[str, tuple[int, int]]] = {lang: {} for lang in LANGS}
    for lineno, raw in enumerate(lines[1:], start=2):
        fields = _split_row(_decode(raw, path, lineno), path, lineno)
        semantic_id = _check_id(fields[0], len(entries), id_lines, path, lineno)
        for lang, text in zip(LANGS, fields[1:]):
            _check_text(lang, text, semantic_id, text_lines[lang], path, lineno)
        id_lines[semantic_id] = lineno
        entries.append(Entry(semantic_id, *fields[1:]))
    return tuple(entries)


def _decode(raw: bytes, path: Path | str, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LexiconError(path, lineno, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    if text.endswith("\r"):
        raise LexiconError(path, lineno, "CRLF line ending; the lexicon uses LF only")
    return text


def _check_header(line: str, path: Path | str) -> None:
    columns = tuple(line.split("\t"))
    if columns == HEADER:
        return
    missing = [name for name in HEADER if name not in columns]
    if missing:
        raise LexiconError(path, 1, f"header is missing column(s) {', '.join(missing)}; expected {'<TAB>'.join(HEADER)}")
    raise LexiconError(path, 1, f"bad header {'<TAB>'.join(columns)!r}; expected {'<TAB>'.join(HEADER)}")


def _split_row(line: str, path: Path | str, lineno: int) -> list[str]:
    if line.strip() == "":
        raise LexiconError(path, lineno, "empty line; every line after the header is one entry")
    fields = line.split("\t")
    if len(fields) != len(HEADER):
        kind = "too many" if len(fields) > len(HEADER) else "too few"
        raise LexiconError(path, lineno, f"{kind} columns: expected {len(HEADER)} ({', '.join(HEADER)}), found {len(fields)}")
    return fields


def _check_id(text: str, expected: int, id_lines: dict[int, int], path: Path | str, lineno: int) -> int:
    if not _ID.fullmatch(text):
        raise LexiconError(path, lineno, f"semantic_id {text!r} is not a non-negative integer")
    semantic_id = int(text)
    if semantic_id in id_lines:
        raise LexiconError(path, lineno, f"duplicate semantic_id {semantic_id} (first at line {id_lines[semantic_id]})")
    if semantic_id != expected:
        raise LexiconError(
            path, lineno, f"semantic_id {semantic_id} out of sequence: expected {expected} (ids are zero-based and contiguous)"
        )
    return semantic_id


def _check_text(lang: str, text: str, semantic_id: int, seen: dict[str, tuple[int, int]], path: Path | str, lineno: int) -> None:
    if text.strip() == "":
        raise LexiconError(path, lineno, f"empty {lang} text")
    if text != text.strip():
        raise LexiconError(path, lineno, f"leading or trailing whitespace in {lang} text {text!r}")
    if text in seen:
        first_id, first_line = seen[text]
        raise LexiconError(
            path, lineno,
            f"{lang} text {text!r} maps to semantic_id {semantic_id} here and to {first_id} at line {first_line}",
        )
    seen[text] = (semantic_id, lineno)


def _length_summary(lengths: list[int]) -> dict:
    return {
        "min": min(lengths),
        "median": statistics.median(lengths),
        "mean": round(statistics.fmean(lengths), 3),
        "max": max(lengths),
        # JSON keys are strings; sorted by length so the table reads top to bottom.
        "histogram": {str(n): c for n, c in sorted(Counter(lengths).items())},
    }


def lexicon_stats(lex: Lexicon) -> dict:
    """Counts, text lengths in characters and character coverage per language (JSON-serialisable)."""
    languages = {}
    for lang in LANGS:
        texts = lex.texts(lang)
        charset = lex.charset(lang)
        stats = {
            "count": len(texts),
            "distinct": len(set(texts)),
            "length": _length_summary([len(t) for t in texts]) if texts else None,
            "distinct_chars": len(charset),
        }
        if lang != "zh":  # the Latin alphabets are short enough to list; fonts must cover them
            stats["chars"] = "".join(sorted(charset))
        else:
            outside = sorted(charset - gb2312_level1())
            stats["outside_gb2312_level1"] = len(outside)
            stats["outside_gb2312_level1_chars"] = "".join(outside)
        languages[lang] = stats
    return {"path": str(lex.path), "sha256": lex.sha256, "entries": len(lex), "languages": languages}

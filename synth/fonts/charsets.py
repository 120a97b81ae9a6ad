"""Character sets each script's styles must cover."""

from __future__ import annotations

from functools import cache

# Spanish needs these beyond ASCII letters; every Latin style must draw all of them.
SPANISH_EXTRA = "ñáéíóúüÑÁÉÍÓÚÜ¿¡"
LATIN_REQUIRED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + SPANISH_EXTRA)

# Which lexicon languages each script's styles render.
SCRIPT_LANGS = {"latin": ("en", "es"), "han": ("zh",)}


@cache
def gb2312_level1() -> frozenset[str]:
    """The 3,755 level-1 hanzi of GB 2312 (rows 16–55), taken from Python's own gb2312 codec."""
    chars = set()
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.add(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:  # row 55 ends after cell 89
                pass
    return frozenset(chars)


def required_chars(script: str) -> frozenset[str]:
    return LATIN_REQUIRED if script == "latin" else gb2312_level1()

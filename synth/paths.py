"""Where the project's data lives: the committed lexicon and catalogue, and the fetched-font cache."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout root: lexicon/ and fonts/ sit beside synth/ (the package is installed editable).
REPO_ROOT = Path(__file__).resolve().parent.parent
LEXICON_DIR = REPO_ROOT / "lexicon"
FONTS_DIR = REPO_ROOT / "fonts"
DEFAULT_LEXICON = LEXICON_DIR / "lexicon.tsv"
DEFAULT_CATALOGUE = FONTS_DIR / "catalogue.yaml"


def cache_dir() -> Path:
    """Root of fetched data: $SYNTH_CACHE, else $XDG_CACHE_HOME/synth, else ~/.cache/synth."""
    if env := os.environ.get("SYNTH_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "synth"

"""Hand corrections to the lexicon build, applied at the source (see lexicon/overrides.yaml).

Fixes go here rather than into lexicon.tsv so that a rebuild keeps them and the reason for each stays
written next to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synth.lexicon import LexiconError
from synth.paths import LEXICON_DIR

DEFAULT_OVERRIDES = LEXICON_DIR / "overrides.yaml"
_KEYS = ("drop_en", "block_es", "block_zh", "reject", "force")


@dataclass(frozen=True)
class Overrides:
    drop_en: frozenset[str] = frozenset()  # English pivots never used
    block_es: frozenset[str] = frozenset()  # Spanish texts never used for any pivot
    block_zh: frozenset[str] = frozenset()  # Chinese texts never used for any pivot
    reject: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # pivot -> lang -> texts
    force: dict[str, dict[str, str]] = field(default_factory=dict)  # pivot -> lang -> the translation
    path: str = ""
    sha256: str = ""

    def summary(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "drop_en": len(self.drop_en),
            "block_es": len(self.block_es),
            "block_zh": len(self.block_zh),
            "reject": sum(len(v) for langs in self.reject.values() for v in langs.values()),
            "force": len(self.force),
        }


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (plain YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first line starting with `needle` (YAML key), 0 if absent."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(needle):
            return lineno
    return 0


def _str_list(value, path: Path, text: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise LexiconError(path, _line_of(text, f"{key}:"), f"{key} must be a list of words")
    for v in value:
        if not isinstance(v, str):
            # YAML 1.1 reads bare yes/no/on/off as booleans: the usual cause.
            raise LexiconError(path, _line_of(text, f"{key}:"), f"{key} item {v!r} is not a string; quote it")
        if not v or v.strip() != v:
            raise LexiconError(path, _line_of(text, f"{key}:"), f"{key} item {v!r} is empty or has spaces around it")
    return tuple(value)


def load_overrides(path: Path | None = None) -> Overrides:
    """Read and check an overrides YAML file (default: lexicon/overrides.yaml)."""
    path = Path(path) if path is not None else DEFAULT_OVERRIDES
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LexiconError(path, 0, "overrides file not found") from None
    text = data.decode("utf-8")
    try:
        doc = yaml.load(text, Loader=_StrictLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise LexiconError(path, mark.line + 1 if mark else 0, f"invalid YAML: {problem}") from None
    if not isinstance(doc, dict):
        raise LexiconError(path, 1, f"expected a mapping with keys {', '.join(_KEYS)}")
    for key in doc:
        if key not in _KEYS:
            raise LexiconError(path, _line_of(text, f"{key}:"), f"unknown key {key!r}; expected one of {', '.join(_KEYS)}")

    reject: dict[str, dict[str, tuple[str, ...]]] = {}
    for pivot, langs in (doc.get("reject") or {}).items():
        if not isinstance(langs, dict) or set(langs) - {"es", "zh"}:
            raise LexiconError(path, _line_of(text, f"{pivot}:"), f"reject.{pivot} must map es/zh to lists of words")
        reject[str(pivot)] = {lang: _str_list(words, path, text, f"{pivot}") for lang, words in langs.items()}

    force: dict[str, dict[str, str]] = {}
    for pivot, langs in (doc.get("force") or {}).items():
        ok = isinstance(langs, dict) and langs and not set(langs) - {"es", "zh"}
        if not ok or not all(isinstance(v, str) and v and v.strip() == v for v in langs.values()):
            raise LexiconError(path, _line_of(text, f"{pivot}:"), f"force.{pivot} must map es and/or zh to one word each")
        force[str(pivot)] = dict(langs)

    drop_en = frozenset(_str_list(doc.get("drop_en"), path, text, "drop_en"))
    for pivot in sorted(set(force) & drop_en):
        raise LexiconError(path, _line_of(text, f"{pivot}:"), f"{pivot!r} is both forced and in drop_en; keep one")
    for lang in ("es", "zh"):
        owners: dict[str, str] = {}
        for pivot, langs in force.items():
            if lang in langs and langs[lang] in owners:
                problem = f"force gives {lang} {langs[lang]!r} to both {owners[langs[lang]]!r} and {pivot!r}"
                raise LexiconError(path, _line_of(text, f"{pivot}:"), problem)
            if lang in langs:
                owners[langs[lang]] = pivot
    return Overrides(
        drop_en=drop_en,
        block_es=frozenset(_str_list(doc.get("block_es"), path, text, "block_es")),
        block_zh=frozenset(_str_list(doc.get("block_zh"), path, text, "block_zh")),
        reject=reject,
        force=force,
        path=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
    )

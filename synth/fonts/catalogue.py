"""The handwriting style catalogue (`fonts/catalogue.yaml`) and the split resolver.

A *style* is one font face or one pen-stroke font. Styles are grouped into *families* (a family's
weights and variants), and the family is the unit of the train / held-out split: no family may appear
in both. `resolve_styles` is the only way to get from a split name to font files, and it re-checks
that guarantee on every call, so a held-out face cannot leak into a training render by accident.
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from hwkit.errors import UserError
from hwkit.files import write_atomic
from synth.paths import DEFAULT_CATALOGUE, cache_dir

KINDS = ("outline", "stroke")
SCRIPTS = ("latin", "han")
SOURCES = ("npm", "debian")
TAGS = ("print", "cursive", "script", "brush", "marker", "casual", "kai", "xing", "cao", "single-line")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("id", "family", "kind", "scripts", "source", "package", "version", "file", "licence", "tags", "split")
_OPTIONAL = ("sha256", "face")  # sha256 may be absent only until `synth fonts pin` fills it in


class Split(str, Enum):
    train = "train"
    held_out = "held-out"


class CatalogueError(UserError, ValueError):
    """The catalogue file is malformed; the one-line message names the file, the style and the problem."""


@dataclass(frozen=True)
class Style:
    """One catalogue entry: where the face comes from and which split it belongs to."""

    id: str
    family: str
    kind: str  # outline | stroke
    scripts: tuple[str, ...]  # subset of SCRIPTS
    source: str  # npm | debian
    package: str
    version: str
    file: str  # path inside the unpacked package; a glob names several pieces merged into one font
    sha256: str  # "" until pinned
    licence: str
    tags: tuple[str, ...]
    split: Split
    face: int | str | None = None  # TTC face index (outline) or font key (stroke file holding several)

    @property
    def is_multi_file(self) -> bool:
        return glob.has_magic(self.file)

    @property
    def cache_path(self) -> Path:
        """The fetched, ready-to-use file: a TTF for outline styles, normalised strokes for stroke styles."""
        suffix = ".ttf" if self.kind == "outline" else ".strokes.json"
        return cache_dir() / "fonts" / f"{self.id}{suffix}"


@dataclass(frozen=True)
class Catalogue:
    path: Path
    sha256: str
    styles: tuple[Style, ...]

    def __len__(self) -> int:
        return len(self.styles)

    def get(self, style_id: str) -> Style:
        for style in self.styles:
            if style.id == style_id:
                return style
        raise KeyError(f"no style {style_id!r} in {self.path}; `synth fonts list` shows the catalogue")

    def families(self, split: Split | None = None, script: str | None = None) -> set[str]:
        return {
            s.family for s in self.styles
            if (split is None or s.split == split) and (script is None or script in s.scripts)
        }


def source_digest(package_dir: Path, pattern: str) -> str:
    """sha256 of a style's source: the file's bytes, or for a glob, of every matched piece in name order."""
    if not glob.has_magic(pattern):
        return hashlib.sha256((package_dir / pattern).read_bytes()).hexdigest()
    pieces = sorted(package_dir.glob(pattern), key=lambda p: p.relative_to(package_dir).as_posix())
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece.relative_to(package_dir).as_posix().encode() + b"\0" + hashlib.sha256(piece.read_bytes()).digest())
    return h.hexdigest()


def _style_from_entry(entry: object, where: str) -> Style:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: entry is not a mapping")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise CatalogueError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(unknown)}")

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        value = str(entry[key])
        if value not in allowed:
            raise CatalogueError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
        return value

    def choices(key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        values = entry[key]
        if not isinstance(values, list) or not values:
            raise CatalogueError(f"{where}: {key} must be a non-empty list")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise CatalogueError(f"{where}: {key} {bad[0]!r} is not one of {', '.join(allowed)}")
        return tuple(values)

    if not _ID.match(str(entry["id"])):
        raise CatalogueError(f"{where}: id {entry['id']!r} must be lowercase letters, digits and '-'")
    sha256 = str(entry.get("sha256") or "")
    if sha256 and not _HEX64.match(sha256):
        raise CatalogueError(f"{where}: sha256 must be 64 lowercase hex digits (run `synth fonts pin` to compute it)")
    return Style(
        id=str(entry["id"]),
        family=str(entry["family"]),
        kind=choice("kind", KINDS),
        scripts=choices("scripts", SCRIPTS),
        source=choice("source", SOURCES),
        package=str(entry["package"]),
        version=str(entry["version"]),
        file=str(entry["file"]),
        sha256=sha256,
        licence=str(entry["licence"]),
        tags=choices("tags", TAGS),
        split=Split(choice("split", tuple(s.value for s in Split))),
        face=entry.get("face"),
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate the catalogue: unique ids, known values, and each family in exactly one split."""
    path = Path(path or DEFAULT_CATALOGUE)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read catalogue ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise CatalogueError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("styles"), list):
        raise CatalogueError(f"{path}: expected a top-level `styles:` list")

    styles: list[Style] = []
    seen: dict[str, int] = {}
    family_split: dict[str, Style] = {}
    for i, entry in enumerate(raw["styles"]):
        style_id = entry.get("id", f"#{i}") if isinstance(entry, dict) else f"#{i}"
        style = _style_from_entry(entry, f"{path}: style {style_id}")
        if style.id in seen:
            raise CatalogueError(f"{path}: style {style.id}: duplicate id (also entry #{seen[style.id]})")
        seen[style.id] = i
        first = family_split.setdefault(style.family, style)
        if first.split != style.split:
            raise CatalogueError(
                f"{path}: style {style.id}: family {style.family!r} is {style.split.value} here but "
                f"{first.split.value} in style {first.id}; a family's styles must share one split"
            )
        styles.append(style)
    return Catalogue(path=path, sha256=hashlib.sha256(raw_bytes).hexdigest(), styles=tuple(styles))


def resolve_styles(
    catalogue: Catalogue,
    split: Split | str | None,
    script: str | None = None,
    kind: str | None = None,
) -> list[Style]:
    """Styles of one split (None = both), optionally one script and kind: the renderer's only door to fonts.

    Raises if the result would mix families across splits, which `load_catalogue` already forbids;
    the re-check guards against catalogues built in code or edited after loading.
    """
    wanted = Split(split) if split is not None else None
    if script is not None and script not in SCRIPTS:
        raise CatalogueError(f"unknown script {script!r}; expected one of {', '.join(SCRIPTS)}")
    if kind is not None and kind not in KINDS:
        raise CatalogueError(f"unknown style kind {kind!r}; expected one of {', '.join(KINDS)}")
    chosen = [
        s for s in catalogue.styles
        if (wanted is None or s.split == wanted)
        and (script is None or script in s.scripts)
        and (kind is None or s.kind == kind)
    ]
    if wanted is not None:
        other = {s.family for s in catalogue.styles if s.split != wanted}
        leaked = sorted({s.family for s in chosen} & other)
        if leaked:
            raise CatalogueError(f"{catalogue.path}: families {', '.join(leaked)} are in both splits; refusing to resolve")
    return chosen


def set_checksums(path: Path, digests: dict[str, str]) -> int:
    """Write `sha256:` values for the given style ids into the catalogue text, keeping its comments.

    Returns how many values changed. Each style block must start with `- id: <id>`; the sha256 line is
    replaced in place or, when absent, added after the id line.
    """
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    changed, id_line = 0, {}
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("- id:")]
    for n, start in enumerate(starts):
        style_id = lines[start].split(":", 1)[1].split("#")[0].strip().strip("'\"")
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        id_line[style_id] = (start, end)
    inserts = []
    for style_id, digest in digests.items():
        if style_id not in id_line:
            raise CatalogueError(f"{path}: no `- id: {style_id}` line to pin")
        start, end = id_line[style_id]
        indent = " " * (len(lines[start]) - len(lines[start].lstrip()) + 2)
        new = f'{indent}sha256: "{digest}"\n'
        for i in range(start + 1, end):
            if lines[i].strip().startswith("sha256:"):
                changed += lines[i] != new
                lines[i] = new
                break
        else:
            inserts.append((start + 1, new))
            changed += 1
    for at, new in sorted(inserts, reverse=True):
        lines.insert(at, new)
    write_atomic(path, "".join(lines))
    load_catalogue(path)  # the edit must leave a valid catalogue
    return changed

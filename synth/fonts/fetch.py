"""Install catalogue styles into the cache, ready for rendering.

For each style: fetch its pinned package (npm or Debian), check the source against the catalogue's
sha256, then convert once: woff2 / TTC face → a plain sfnt file, Fontsource's unicode-range CJK pieces
→ one merged font, stroke sources → one normalised JSON (see `synth.fonts.strokes`). Beside each result a
stamp records the source digest, the result's own sha256 and the characters the style covers, so a
second run checks local files only and never touches the network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fontTools.merge import Merger
from fontTools.ttLib import TTFont

from hwkit.errors import UserError
from hwkit.files import sha256_file, write_atomic
from synth.fonts.catalogue import Style, source_digest
from synth.fonts.coverage import outline_coverage, stroke_coverage
from synth.fonts.packages import debian_package, npm_package
from synth.fonts.strokes import StrokeFormatError, read_hanzi_writer, read_svg_font

# Layout tables of unicode-range pieces disagree with one another and block fontTools' merger; word
# rendering with basic layout needs none of them.
_DROP_BEFORE_MERGE = ("GSUB", "GPOS", "GDEF", "STAT", "vhea", "vmtx", "VORG", "BASE", "JSTF", "MATH")

# fontTools warns about harmless padding in some packaged fonts (AR PL KaitiM GB); real damage raises.
logging.getLogger("fontTools").setLevel(logging.ERROR)


class FetchError(UserError, RuntimeError):
    """A style could not be installed; the message names the style and the fix."""


@dataclass(frozen=True)
class Installed:
    style: Style
    path: Path
    covered: frozenset[str]
    status: str  # "cached" or "fetched"


def stamp_path(style: Style) -> Path:
    return style.cache_path.with_name(f"{style.id}.stamp.json")


def package_dir(style: Style) -> Path:
    fetch = npm_package if style.source == "npm" else debian_package
    return fetch(style.package, style.version)


def read_installed(style: Style) -> Installed | None:
    """The cached result of an earlier fetch, if it is complete and matches the catalogue entry."""
    stamp = stamp_path(style)
    try:
        meta = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recipe = (meta.get("source_sha256"), meta.get("file"), meta.get("face"), meta.get("kind"))
    if recipe != (style.sha256, style.file, style.face, style.kind) or not style.cache_path.is_file():
        return None  # a different source, file, face or kind: install again
    if sha256_file(style.cache_path) != meta.get("sha256"):
        raise FetchError(
            f"style {style.id}: cached file {style.cache_path} is corrupt (sha256 differs from its stamp); "
            f"delete it and run `synth fonts fetch` again"
        )
    return Installed(style, style.cache_path, frozenset(meta["covered"]), "cached")


def _convert_outline(style: Style, pkg: Path, out: Path) -> None:
    if style.is_multi_file:
        pieces = sorted(pkg.glob(style.file))
        with tempfile.TemporaryDirectory() as tmp:
            plain = []
            for i, piece in enumerate(pieces):
                font = TTFont(piece)
                font.flavor = None
                for tag in _DROP_BEFORE_MERGE:
                    if tag in font:
                        del font[tag]
                plain.append(Path(tmp) / f"{i:04d}.ttf")
                font.save(plain[-1])
            merged = Merger().merge([str(p) for p in plain])
            merged.save(out)
        return
    src = pkg / style.file
    if style.face is None and src.suffix.lower() in (".ttf", ".otf"):
        shutil.copyfile(src, out)  # already a plain sfnt: keep the packaged bytes
        return
    font = TTFont(src, fontNumber=int(style.face) if style.face is not None else -1)
    font.flavor = None  # woff / woff2 → sfnt (Pillow reads woff2 only with brotli; convert once here)
    font.save(out)


def _convert_stroke(style: Style, pkg: Path, out: Path) -> frozenset[str]:
    if style.is_multi_file:
        data = read_hanzi_writer(sorted(pkg.glob(style.file)))
    elif style.file.endswith(".svg"):
        data = read_svg_font(pkg / style.file)
    else:
        raise FetchError(f"style {style.id}: no reader for stroke file {style.file}; expected .svg or Hanzi Writer '?.json'")
    out.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return stroke_coverage(data["glyphs"])


def install_style(style: Style) -> Installed:
    """Fetch, verify and convert one style (or return the cached result without network work)."""
    if not style.sha256:
        raise FetchError(f"style {style.id} has no sha256 in the catalogue; run `synth fonts pin {style.id}` first")
    if (done := read_installed(style)) is not None:
        return done
    pkg = package_dir(style)
    if style.is_multi_file and not any(pkg.glob(style.file)):
        raise FetchError(f"style {style.id}: {style.package} {style.version} has no file matching {style.file}")
    if not style.is_multi_file and not (pkg / style.file).is_file():
        raise FetchError(f"style {style.id}: {style.package} {style.version} has no file {style.file}")
    digest = source_digest(pkg, style.file)
    if digest != style.sha256:
        raise FetchError(
            f"style {style.id}: checksum mismatch for {style.package} {style.version}:{style.file} "
            f"(catalogue {style.sha256[:12]}…, package {digest[:12]}…); the package changed — check it, "
            f"then run `synth fonts pin {style.id}`"
        )
    out = style.cache_path
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        try:
            if style.kind == "outline":
                _convert_outline(style, pkg, tmp)
                covered = outline_coverage(tmp)
            else:
                covered = _convert_stroke(style, pkg, tmp)
        except StrokeFormatError as exc:
            raise FetchError(f"style {style.id}: {exc}") from None
        except Exception as exc:  # fontTools raises many types for a damaged font
            raise FetchError(f"style {style.id}: cannot convert {style.file} ({type(exc).__name__}: {exc})") from None
        meta = {
            "style": style.id,
            "package": style.package,
            "version": style.version,
            "file": style.file,
            "face": style.face,
            "kind": style.kind,
            "source_sha256": style.sha256,
            "sha256": sha256_file(tmp),
            "covered": "".join(sorted(covered)),
        }
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    # the stamp lands last: a stamp means a complete, verified install
    write_atomic(stamp_path(style), json.dumps(meta, ensure_ascii=False, indent=1))
    return Installed(style, out, covered, "fetched")


def installed_coverage(style: Style) -> frozenset[str]:
    """Characters `style` can draw, from its fetch stamp; raises if the style is not fetched yet."""
    done = read_installed(style)
    if done is None:
        raise FetchError(f"style {style.id} is not installed in {style.cache_path.parent}; run `synth fonts fetch`")
    return done.covered


def pin_digest(style: Style) -> str:
    """The sha256 the catalogue should record for `style`, computed from its package as published now."""
    pkg = package_dir(style)
    if not any(pkg.glob(style.file)):
        raise FetchError(f"style {style.id}: {style.package} {style.version} has no file matching {style.file}")
    return source_digest(pkg, style.file)


def install_styles(styles: list[Style], workers: int = 1, on_done=None, start_method: str = "spawn") -> list[Installed]:
    """Install several styles, `workers` at a time (merging CJK pieces is CPU-bound: use processes).

    `on_done(installed)` is called as each finishes. The first failure cancels what has not started
    and is raised; styles already finished stay installed (each install is atomic on its own).
    Workers are spawned, not forked: the caller's progress bar runs a thread, and forking a threaded
    process can deadlock.
    """
    results: dict[str, Installed] = {}
    if workers <= 1 or len(styles) <= 1:
        for style in styles:
            results[style.id] = install_style(style)
            on_done and on_done(results[style.id])
    else:
        import multiprocessing
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method)) as pool:
            pending = {pool.submit(install_style, style) for style in styles}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    installed = future.result()
                    results[installed.style.id] = installed
                    on_done and on_done(installed)
    return [results[style.id] for style in styles]

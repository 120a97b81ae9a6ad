"""The IAM Handwriting Database's word level: `words.txt` and `words/<prefix>/<form>/<word-id>.png`.

`words.txt` (in `ascii/` or at the root) has one line per word after `#` comments:

    a01-000u-00-00 ok 154 1 408 768 27 51 AT A

that is: word id; segmentation (ok, or er: possibly bad); the grey level that binarises its line; the
number of components; the bounding box x y w h; the grammatical tag; the transcription (the rest).

The word id a01-000u-00-00 is form a01-000u, line 00, word 00; its image is
words/a01/a01-000u/a01-000u-00-00.png. The writer of a form is the second column of `forms.txt`, when
that file is there; otherwise the form id stands in for the writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from train.realdata import RealWord, SourceError, read_grey

SEGMENTATION = ("ok", "er")


def find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / "ascii" / name, root / name):
        if candidate.is_file():
            return candidate
    return None


def read_writers(forms: Path | None) -> dict[str, str]:
    """form id → writer id from `forms.txt` (lines "a01-000u 000 2 prt 7 5 52 36"), or {} without it."""
    if forms is None:
        return {}
    writers = {}
    for n, line in enumerate(forms.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise SourceError(f"{forms}:{n}: expected 'form-id writer-id ...', got {line!r}")
        writers[fields[0]] = fields[1]
    return writers


def iam_words(root: Path, include_er: bool = False) -> Iterator[RealWord]:
    """Every word of an IAM tree as a `RealWord` (lang en), `er` segmentations only when asked."""
    root = Path(root)
    words = find_file(root, "words.txt")
    if words is None:
        raise SourceError(f"{root}: no words.txt (looked in {root / 'ascii'} and {root}); pass the folder that "
                          "holds IAM's ascii/ and words/")
    writers = read_writers(find_file(root, "forms.txt"))
    for n, line in enumerate(words.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split(" ")
        where = f"{words}:{n}"
        if len(fields) < 10:
            raise SourceError(f"{where}: expected 10 fields (id, segmentation, grey level, components, x, y, w, h, "
                              f"tag, transcription), got {len(fields)}: {line!r}")
        word_id, status = fields[0], fields[1]
        if status not in SEGMENTATION:
            raise SourceError(f"{where}: segmentation {status!r}; expected ok or er")
        parts = word_id.split("-")
        if len(parts) != 4:
            raise SourceError(f"{where}: word id {word_id!r} is not form-line-word (like a01-000u-00-00)")
        if status == "er" and not include_er:
            continue
        form = f"{parts[0]}-{parts[1]}"
        path = root / "words" / parts[0] / form / f"{word_id}.png"
        text = " ".join(fields[9:])
        yield RealWord(text=text, lang="en", writer=f"iam:{writers.get(form, form)}",
                       source={"dataset": "iam", "id": word_id, "file": path.relative_to(root).as_posix(),
                               "segmentation": status, "line": n},
                       load=lambda path=path, where=where: read_grey(path, where))

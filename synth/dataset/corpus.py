"""Named corpus presets (`synth corpus NAME`): small YAML files in `synth/configs/corpus/`.

Each preset fixes a plan (languages, font split, IDs, per-ID count, master seed) and a distortion
preset by name, so the corpora of the reference paper are one command each and always the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from synth.dataset.plan import PlanConfig, PlanError
from synth.lexicon import LANGS

CORPUS_DIR = Path(__file__).parent.parent / "configs" / "corpus"
_KEYS = ("langs", "fonts", "ids", "per_id", "per_style", "seed", "distort", "rows_per_shard")


@dataclass(frozen=True)
class CorpusPreset:
    name: str
    plan: PlanConfig
    distort: str  # a distortion preset name (synth/configs/distort/)


def corpus_names(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or CORPUS_DIR).glob("*.yaml"))


def load_corpus(name: str, directory: Path | None = None) -> CorpusPreset:
    """The preset `name`; PlanError naming the valid presets if there is none."""
    directory = directory or CORPUS_DIR
    if name not in corpus_names(directory):
        raise PlanError(f"unknown corpus preset {name!r}; valid presets: {', '.join(corpus_names(directory))}")
    path = directory / f"{name}.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_KEYS)}")
    if ("per_id" in values) == ("per_style" in values):
        raise PlanError(f"{path}: give exactly one of per_id and per_style")
    mode = "per_id" if "per_id" in values else "per_style"
    langs = values.get("langs", list(LANGS))
    plan = PlanConfig(
        langs=tuple(langs) if isinstance(langs, list) else (str(langs),),
        fonts=str(values.get("fonts", "train")),
        ids=str(values.get("ids", "")),
        mode=mode,
        samples=values[mode],
        seed=values.get("seed", 0),
        **({"rows_per_shard": values["rows_per_shard"]} if "rows_per_shard" in values else {}),
    )
    return CorpusPreset(name, plan, str(values.get("distort", "default")))

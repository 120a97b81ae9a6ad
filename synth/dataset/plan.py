"""What a dataset holds, decided before anything is drawn: one task per sample, in shard order.

A plan is a pure function of (plan config, lexicon, catalogue, installed coverage). Every sample gets
its own seed from `derive_seed`, never from worker order, so the tasks — and the bytes rendered from
them — are the same however many processes render them. A (lexicon entry, style) pair the style cannot
draw is skipped before planning and counted, never drawn: no tofu boxes, no blank glyphs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from hwkit.errors import UserError
from synth.fonts.catalogue import Catalogue, CatalogueError, Split, Style, resolve_styles
from synth.fonts.charsets import SCRIPT_LANGS
from synth.fonts.coverage import can_render
from synth.fonts.fetch import installed_coverage
from synth.lexicon import LANGS, Lexicon
from synth.render.recipe import SampleTask

FONT_SPLITS = ("train", "held-out", "all")
MODES = ("per_style", "per_id")
# Shard file prefixes. `held_out`, not `held-out`: Hugging Face `datasets` takes the split name from
# the file name and rejects names that are not \w+, so `held-out-00000-of-00004.parquet` would not load.
SERIES = {Split.train: "train", Split.held_out: "held_out"}
SPLIT_OF_SERIES = {series: split.value for split, series in SERIES.items()}  # file series → split column
_SCRIPT_OF = {lang: script for script, langs in SCRIPT_LANGS.items() for lang in langs}
_UINT64 = 1 << 64


class PlanError(UserError, ValueError):
    """The plan cannot be made (bad option, IDs out of range, nothing renderable); one line."""


def _hash64(*parts: object) -> int:
    # Canonical encoding: str() of each part joined by the ASCII unit separator, which no lexicon text,
    # style id or integer contains, so distinct tuples never encode to the same bytes.
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    # `person` is a constant (the module's first name): every dataset's seeds depend on it
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"synth.plan").digest(), "big")


def derive_seed(master_seed: int, semantic_id: int, lang: str, style_id: str, index: int) -> int:
    """The uint64 seed of one sample: blake2b of (master seed, semantic ID, language, style, index)."""
    return _hash64("sample", master_seed, semantic_id, lang, style_id, index)


def parse_ids(spec: str, n_entries: int) -> range:
    """`"a:b"` → IDs a..b-1; `"N"` → the first N IDs; `""` → every entry. Must lie inside the lexicon."""
    spec = spec.strip()
    try:
        if not spec:
            ids = range(n_entries)
        elif ":" in spec:
            low, high = spec.split(":", 1)
            ids = range(int(low), int(high))
        else:
            ids = range(int(spec))
    except ValueError:
        raise PlanError(f"`ids` {spec!r} is neither a range a:b nor a count N") from None
    if ids.start < 0 or len(ids) == 0:
        raise PlanError(f"`ids` {spec!r} selects no IDs; use a:b with 0 ≤ a < b, or a count N ≥ 1")
    if ids.stop > n_entries:
        raise PlanError(
            f"`ids` {spec!r} is out of range: the lexicon has {n_entries:,} entries (IDs 0:{n_entries})"
        )
    return ids


@dataclass(frozen=True)
class PlanConfig:
    langs: tuple[str, ...] = LANGS  # subset of en, es, zh; stored in lexicon order
    fonts: str = "train"  # train | held-out | all: which font split's styles
    ids: str = ""  # "a:b" (IDs a..b-1), "N" (the first N IDs) or "" (every entry)
    mode: str = "per_style"  # per_style: N per renderable (ID, style); per_id: N per (ID, language)
    samples: int = 1  # the N of the mode
    seed: int = 0  # master seed, 0 ≤ seed < 2**64
    rows_per_shard: int = 2000  # consecutive tasks per shard: the unit of work, resume and download

    def __post_init__(self) -> None:
        unknown = [lang for lang in self.langs if lang not in LANGS]
        if unknown or not self.langs:
            raise PlanError(f"unknown language {unknown[0] if unknown else ''!r}; expected one of {', '.join(LANGS)} (or all)")
        object.__setattr__(self, "langs", tuple(lang for lang in LANGS if lang in self.langs))
        if self.fonts not in FONT_SPLITS:
            raise PlanError(f"unknown font split {self.fonts!r}; expected one of {', '.join(FONT_SPLITS)}")
        if self.mode not in MODES:
            raise PlanError(f"unknown plan mode {self.mode!r}; expected one of {', '.join(MODES)}")
        for name in ("samples", "rows_per_shard"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PlanError(f"{name} must be a whole number ≥ 1, not {getattr(self, name)!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < _UINT64:
            raise PlanError(f"seed must be a whole number in [0, 2**64), not {self.seed!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "langs": list(self.langs)}


@dataclass(frozen=True)
class ShardPlan:
    name: str  # path inside the dataset: data/{series}-{i:05d}-of-{n:05d}.parquet
    tasks: tuple[SampleTask, ...]  # sorted by (semantic_id, lang, style, index)

    @property
    def id_range(self) -> tuple[int, int]:
        return self.tasks[0].semantic_id, self.tasks[-1].semantic_id


@dataclass(frozen=True)
class Plan:
    config: PlanConfig
    ids: range
    tasks: tuple[SampleTask, ...]  # sorted by (semantic_id, lang, style, index)
    styles: tuple[Style, ...]  # every style resolved for the plan, used or not, sorted by id
    # (entry, style) pairs a style cannot draw: skipped[lang][style_id] = number of entries
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    # per_id only: (ID, language) pairs no style can draw, so they get no samples at all
    unrenderable: dict[str, list[int]] = field(default_factory=dict)

    @property
    def skipped_pairs(self) -> int:
        return sum(n for per_style in self.skipped.values() for n in per_style.values())

    def shards(self) -> list[ShardPlan]:
        """Tasks cut into shards of `rows_per_shard` consecutive tasks, one file series per font split."""
        by_series: dict[str, list[SampleTask]] = defaultdict(list)
        for task in self.tasks:  # stable: each series keeps the global sort order
            by_series[SERIES[task.style.split]].append(task)
        size = self.config.rows_per_shard
        shards = []
        for series in SERIES.values():
            tasks = by_series.get(series, [])
            n = -(-len(tasks) // size)
            shards += [
                ShardPlan(f"data/{series}-{i:05d}-of-{n:05d}.parquet", tuple(tasks[i * size:(i + 1) * size]))
                for i in range(n)
            ]
        return shards


def _styles_for(catalogue: Catalogue, fonts: str, lang: str) -> list[Style]:
    split = None if fonts == "all" else Split(fonts)
    try:
        styles = resolve_styles(catalogue, split, _SCRIPT_OF[lang])
    except CatalogueError as exc:
        raise PlanError(str(exc)) from None
    if not styles:
        raise PlanError(f"the catalogue {catalogue.path} has no {fonts} styles for {_SCRIPT_OF[lang]} ({lang})")
    # Sorted by id so the plan does not depend on the order of entries in the catalogue file.
    return sorted(styles, key=lambda s: s.id)


def plan_tasks(config: PlanConfig, lexicon: Lexicon, catalogue: Catalogue) -> Plan:
    """Every sample of the dataset as a task, sorted by (semantic_id, lang, style, index).

    Raises PlanError for IDs outside the lexicon or a plan with nothing to render, and FetchError
    (from `installed_coverage`) when a style is not installed or its cached file is corrupt.
    """
    ids = parse_ids(config.ids, len(lexicon))
    coverage: dict[str, frozenset[str]] = {}
    tasks: list[SampleTask] = []
    skipped: dict[str, dict[str, int]] = {}
    unrenderable: dict[str, list[int]] = {}
    resolved: dict[str, Style] = {}
    for lang in config.langs:
        styles = _styles_for(catalogue, config.fonts, lang)
        for style in styles:
            resolved[style.id] = style
            if style.id not in coverage:
                coverage[style.id] = installed_coverage(style)
        skipped[lang] = {s.id: 0 for s in styles}
        unrenderable[lang] = []
        texts = lexicon.texts(lang)
        lang_tasks = 0
        for semantic_id in ids:
            text = texts[semantic_id]
            usable = []
            for style in styles:
                if can_render(coverage[style.id], text):
                    usable.append(style)
                else:
                    skipped[lang][style.id] += 1
            chosen = _choose(config, semantic_id, lang, usable)
            if not usable:
                unrenderable[lang].append(semantic_id)
            for style, index in chosen:
                seed = derive_seed(config.seed, semantic_id, lang, style.id, index)
                tasks.append(SampleTask(semantic_id, lang, text, style, index, seed))
            lang_tasks += len(chosen)
        if lang_tasks == 0:
            raise PlanError(
                f"no {lang} entry in IDs {ids.start}:{ids.stop} can be rendered by the {config.fonts} styles "
                f"({', '.join(s.id for s in styles)})"
            )
    tasks.sort(key=lambda t: (t.semantic_id, t.lang, t.style.id, t.index))
    skipped = {lang: {sid: n for sid, n in per.items() if n} for lang, per in skipped.items()}
    return Plan(
        config=config,
        ids=ids,
        tasks=tuple(tasks),
        styles=tuple(sorted(resolved.values(), key=lambda s: s.id)),
        skipped={lang: per for lang, per in skipped.items() if per},
        unrenderable={lang: found for lang, found in unrenderable.items() if found},
    )


def _choose(config: PlanConfig, semantic_id: int, lang: str, usable: list[Style]) -> list[tuple[Style, int]]:
    """(style, index) of each sample of one (ID, language), given the styles that can draw it."""
    if not usable:
        return []
    if config.mode == "per_style":
        return [(style, index) for style in usable for index in range(config.samples)]
    # per_id: a seeded permutation of the usable styles per (ID, language); sample k uses perm[k % R]
    # with index k // R, so every style gets ⌊N/R⌋ or ⌈N/R⌉ samples and which ones get the extra
    # sample varies from ID to ID.
    rng = np.random.default_rng(_hash64("style-order", config.seed, semantic_id, lang))
    perm = rng.permutation(len(usable))
    r = len(usable)
    return [(usable[perm[k % r]], k // r) for k in range(config.samples)]

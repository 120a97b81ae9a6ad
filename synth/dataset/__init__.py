"""Build a dataset: plan it, claim the output folder, render shards in worker processes, write the record.

Shards are the unit of work. Each worker builds one renderer and renders whole shards, and every sample
carries its own seed, so the bytes do not depend on the number of workers. The manifest is written
before the first shard (status "incomplete") and rewritten as each shard lands with its sha256, so a
re-run of the same command skips the shards already written and ends byte-identical to a run that never
stopped. Every check that can fail on bad input runs before anything is written.

A build can also be one part of N (`Part`): it renders every N-th shard, so machines that share nothing
(SLURM array tasks, Kubernetes jobs) can each build a part, and `merge_parts` joins the parts into the
folder one build would have written, byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hwkit.files import atomic_folder, replace_refusal, sha256_file, write_atomic
from synth.dataset.card import dataset_card
from synth.dataset.executors import check_executor, render_jobs
from synth.dataset.manifest import (
    CARD,
    DATA,
    MANIFEST,
    SIZES,
    DatasetError,
    config_differences,
    foreign_files,
    make_manifest,
    read_manifest,
    remove_ours,
    sizes,
    sweep_temp,
    with_records,
    write_json,
)
from synth.dataset.plan import Plan, PlanConfig, ShardPlan, plan_tasks
from synth.dataset.shards import ShardConfig, ShardRecord
from synth.fonts.catalogue import load_catalogue
from synth.lexicon import load_lexicon
from synth.render.config import RenderConfig

Progress = Callable[[int, int], None]  # (rows just rendered, rows this run renders); first call (0, total)


PART_COMPLETE = "part-complete"  # a part's manifest status once all of its shards are written


@dataclass(frozen=True)
class Part:
    """Part `index` of `count`: the shards whose position in the plan is index modulo count."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1 and isinstance(self.index, int)
                and 0 <= self.index < self.count):
            raise DatasetError(f"shard index {self.index} of {self.count}: need 0 ≤ `shard_index` < `num_shards`")

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count}

    def takes(self, position: int) -> bool:
        return position % self.count == self.index


@dataclass(frozen=True)
class BuildResult:
    out: Path
    rows: int
    shards: int
    rendered_rows: int  # rows rendered by this run (the rest were already on disk)
    reused_shards: int
    skipped_pairs: int
    seconds: float  # wall time of the whole build
    render_seconds: float  # wall time spent rendering

    @property
    def images_per_second(self) -> float:
        return self.rendered_rows / self.render_seconds if self.render_seconds > 0 else 0.0

    def summary(self) -> str:
        reused = f" ({self.reused_shards} already present)" if self.reused_shards else ""
        return (f"{self.rows:,} rows in {self.shards} shards{reused}, {self.skipped_pairs:,} (entry, style) pairs "
                f"skipped, {self.seconds:.1f} s, {self.images_per_second:,.0f} images/s → {self.out}")


def json_ready(data: dict) -> dict:
    # Tuples become lists, as they will when read back from manifest.json: compare like with like.
    return json.loads(json.dumps(data))


def default_renderer() -> type:
    from synth.render.recipe import Renderer  # lazy: planning, verifying and tests need no renderer

    return Renderer


def build_dataset(out: Path, plan_config: PlanConfig, render_config: RenderConfig, *,
                  shard_config: ShardConfig = ShardConfig(), lexicon_path: Path | None = None,
                  catalogue_path: Path | None = None, workers: int = 1, overwrite: bool = False, command: str = "",
                  renderer_cls: type | None = None, progress: Progress | None = None, part: Part | None = None,
                  executor: str = "local", address: str | None = None) -> BuildResult:
    """Render the dataset `plan_config` describes into `out` (resuming it if it is the same dataset), or
    only `part` of it: every part's folder records the whole plan, its own shards, and the part.
    `executor` "local" renders in a process pool of `workers`; "ray" on a Ray cluster (`address`, or a local
    one with `workers` CPUs): the same bytes either way.

    Raises PlanError, LexiconError, CatalogueError or FetchError for bad input and DatasetError for an
    output that cannot be claimed or a render that failed; in every input case before writing anything.
    """
    started = time.perf_counter()
    out = Path(out)
    renderer_cls = renderer_cls or default_renderer()
    lexicon = load_lexicon(lexicon_path)
    catalogue = load_catalogue(catalogue_path)
    plan = plan_tasks(plan_config, lexicon, catalogue)
    shards = plan.shards()
    config = json_ready({
        "plan": plan_config.to_dict(), "render": render_config.to_dict(),
        "render_fingerprint": render_config.fingerprint(), "shards": shard_config.to_dict(),
        "renderer": f"{renderer_cls.__module__}.{renderer_cls.__qualname__}",
    })
    renderer_cls(render_config)  # cheap by contract; a bad config fails here, not in a worker
    check_executor(executor, address)
    planned = make_manifest(plan, shards, config, command, lexicon, catalogue)
    if part is not None:
        planned["part"] = part.to_dict()
        shards = [shard for i, shard in enumerate(shards) if part.takes(i)]

    def manifest(done: dict[str, ShardRecord]) -> dict:
        return with_records(planned, done)

    existed = out.exists()
    recorded = _claim_output(out, planned, overwrite)
    done = _present(out, shards, recorded)
    try:
        write_json(out / MANIFEST, manifest(done))  # the plan record, before any shard
    except OSError as exc:
        raise DatasetError(f"cannot write to {out}: {exc.strerror or exc}") from None

    jobs = [shard for shard in shards if shard.name not in done]
    to_render = sum(len(job.tasks) for job in jobs)
    if progress:
        progress(0, to_render)

    def landed(record: ShardRecord) -> None:
        done[record.name] = record
        write_json(out / MANIFEST, manifest(done))

    render_started = time.perf_counter()
    report = (lambda n: progress(n, to_render)) if progress else (lambda n: None)
    try:
        render_jobs(executor, jobs, out, renderer_cls, render_config, shard_config, workers, address, landed, report)
    except BaseException:
        if not recorded and not done:  # a new build that landed nothing: leave no half-made folder behind
            _remove_new_build(out, existed)
        raise
    render_seconds = time.perf_counter() - render_started

    final = manifest(done)
    if part is None:
        write_json(out / SIZES, sizes(final))
        write_atomic(out / CARD, dataset_card(final, plan, lexicon, catalogue))
    else:  # sizes.json and the card describe the whole dataset: `merge_parts` writes them
        final["status"] = PART_COMPLETE
    write_json(out / MANIFEST, final)  # last: "complete" means every file above is in place
    return BuildResult(
        out=out, rows=sum(len(shard.tasks) for shard in shards), shards=len(shards), rendered_rows=to_render,
        reused_shards=len(shards) - len(jobs), skipped_pairs=plan.skipped_pairs,
        seconds=time.perf_counter() - started, render_seconds=render_seconds,
    )


def _present(out: Path, shards: list[ShardPlan], recorded: dict[str, ShardRecord]) -> dict[str, ShardRecord]:
    """Make `out`/data and return the shards already there: present only if their bytes match the record."""
    try:
        (out / DATA).mkdir(parents=True, exist_ok=True)
        sweep_temp(out)
    except OSError as exc:
        raise DatasetError(f"cannot write to {out}: {exc.strerror or exc}") from None
    done = {}
    for shard in shards:
        record = recorded.get(shard.name)
        path = out / shard.name
        if record and path.is_file() and sha256_file(path) == record.sha256:
            done[shard.name] = record
    return done


def _remove_new_build(out: Path, existed: bool) -> None:
    for made in (out / MANIFEST, out / DATA):
        shutil.rmtree(made) if made.is_dir() else made.unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):  # something else landed in it meanwhile: keep it
            out.rmdir()


def _record(entry: dict) -> ShardRecord:
    """A manifest's shard entry as the record its build wrote."""
    return ShardRecord(entry["name"], entry["rows"], entry["sha256"], entry["semantic_id_min"], entry["semantic_id_max"])


def _claim_output(out: Path, planned: dict, overwrite: bool) -> dict[str, ShardRecord]:
    """Check that `out` may receive this dataset; return shard records of a run to resume."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return {}
    if not (out / MANIFEST).exists():
        raise DatasetError(f"output {out} is not empty and holds no synth dataset (no {MANIFEST}); choose an empty or new folder")
    try:
        existing = read_manifest(out)
    except DatasetError as exc:
        # Not a manifest we wrote (ours are written atomically): the folder is someone else's.
        raise DatasetError(f"{exc}; refusing to touch {out}, even with `overwrite=True` — choose another folder") from None
    same = existing.get("fingerprint") == planned["fingerprint"]
    if same and existing.get("part") != planned.get("part"):
        def name(part: dict | None) -> str:
            return "the whole dataset" if part is None else f"part {part['index']} of {part['count']}"
        raise DatasetError(f"output {out} holds {name(existing.get('part'))} of this dataset, and this command "
                           f"builds {name(planned.get('part'))}; give each part its own folder")
    if same:
        return {e["name"]: _record(e) for e in existing.get("shards", []) if e.get("sha256")}
    if not overwrite:
        changed = config_differences(existing.get("config", {}), planned["config"])
        what = f"config differs in {', '.join(changed[:4])}" if changed else "lexicon, catalogue or synth version differs"
        raise DatasetError(f"output {out} holds a different dataset ({what}); pass `overwrite=True` to replace it, or choose another folder")
    foreign = foreign_files(out)
    if foreign:
        raise DatasetError(
            f"output {out} holds files that are not part of a synth dataset ({', '.join(foreign[:5])}); "
            f"refusing to overwrite — move them or choose another folder"
        )
    remove_ours(out)
    return {}


def merge_parts(parts: list[Path], out: Path, *, lexicon_path: Path | None = None,
                catalogue_path: Path | None = None, overwrite: bool = False, link: bool = False) -> BuildResult:
    """Join the folders of parts 0..N-1 of one dataset into `out`: the shards (copied, or with `link`
    hard-linked where the filesystem allows: no second copy, but the files are then shared with the parts),
    each checked against its recorded sha256, then sizes.json, the card and the manifest, exactly as one
    build would have written them. Nothing is written on bad input; `out` appears whole or not at all."""
    started = time.perf_counter()
    manifests = []
    for root in parts:
        manifest = read_manifest(Path(root))
        if manifest is None or "part" not in manifest:
            raise DatasetError(f"{root} is not a dataset part (no manifest with a part); build parts with "
                               "`shard_index` I and `num_shards` N")
        if manifest.get("status") != PART_COMPLETE:
            p = manifest["part"]
            raise DatasetError(f"{root}: part {p['index']} of {p['count']} is not finished; run its command again "
                               "to complete it")
        manifests.append(manifest)
    first = manifests[0]
    for root, manifest in zip(parts, manifests, strict=True):
        if manifest["fingerprint"] != first["fingerprint"]:
            raise DatasetError(f"{root} is a part of another dataset than {parts[0]} (fingerprints differ)")
    count = first["part"]["count"]
    indices = sorted(m["part"]["index"] for m in manifests)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        problem = f"missing part(s) {', '.join(map(str, missing))}" if missing else \
            f"part(s) {', '.join(map(str, twice))} given twice"
        raise DatasetError(f"{problem} of {count}; give each of parts 0..{count - 1} once")
    records: dict[str, tuple[Path, ShardRecord]] = {}
    for root, manifest in zip(parts, manifests, strict=True):
        part = Part(**manifest["part"])
        for i, e in enumerate(manifest["shards"]):
            if part.takes(i):
                path = Path(root) / e["name"]
                if not path.is_file() or sha256_file(path) != e["sha256"]:
                    raise DatasetError(f"{path} is missing or differs from its recorded sha256; run the part's "
                                       "command again to repair it")
                records[e["name"]] = (path, _record(e))
    lexicon, catalogue = load_lexicon(lexicon_path), load_catalogue(catalogue_path)
    for what, ours, option in (("lexicon", lexicon.sha256, "--lexicon"), ("catalogue", catalogue.sha256, "--catalogue")):
        if first[what]["sha256"] != ours:
            raise DatasetError(f"the parts were rendered with another {what} ({first[what]['file']}, sha256 "
                               f"{first[what]['sha256'][:12]}…); pass it with {option}")
    plan: Plan = plan_tasks(PlanConfig(**first["config"]["plan"]), lexicon, catalogue)
    whole = {k: v for k, v in first.items() if k != "part"}
    final = with_records(whole, {name: record for name, (_, record) in records.items()})
    refusal = replace_refusal(out, overwrite, lambda o: read_manifest(o) is not None, "a synth dataset", "synth",
                              foreign_files)
    if refusal:
        raise DatasetError(refusal)
    with atomic_folder(out, overwrite) as tmp:
        (tmp / DATA).mkdir()
        for name, (source, _) in records.items():
            if link:
                try:
                    os.link(source, tmp / name)
                    continue
                except OSError:  # another filesystem, or no hard links there: copy
                    pass
            shutil.copy2(source, tmp / name)
        write_json(tmp / SIZES, sizes(final))
        write_atomic(tmp / CARD, dataset_card(final, plan, lexicon, catalogue))
        write_json(tmp / MANIFEST, final)
    return BuildResult(out=out, rows=final["counts"]["rows"], shards=len(records), rendered_rows=0,
                       reused_shards=len(records), skipped_pairs=final["skipped"]["pairs"],
                       seconds=time.perf_counter() - started, render_seconds=0.0)

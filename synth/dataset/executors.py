"""Where shards are rendered: `render_shard` renders one, and an executor runs it over a build's shards.

- `render_local`: in this process (one worker) or a process pool of `workers` (spawned; each worker builds
  its own renderer and dies with its parent).
- `render_with_ray` (`synth render ... --executor ray [--address ADDR]`, the optional extra
  `pip install '.[ray]'`): one Ray actor per CPU builds one renderer and renders whole shards with the same
  `render_shard`, so the bytes are the same. The actor writes the shard into its own scratch folder and
  returns the file's bytes; this process writes them into the dataset (temporary name, then rename) and
  checks them against the sha256 the actor computed. So the nodes need the package and the font cache
  (`synth fonts fetch` on each, or a shared $SYNTH_CACHE), but no shared filesystem for the output.

Every executor lands each finished shard through `landed(record)` and reports rows through `report(n)`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_lib
import socket
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from hwkit.files import die_with_parent, sha256_file, write_atomic
from synth.dataset.manifest import DatasetError, sweep_temp
from synth.dataset.plan import ShardPlan
from synth.dataset.shards import ShardConfig, ShardRecord, sample_row, write_shard
from synth.render.config import RenderConfig

EXECUTORS = ("local", "ray")
REPORT_EVERY = 100  # rows between progress reports from a worker: smooth bar, negligible queue traffic

def check_executor(executor: str, address: str | None) -> None:
    """Refuse an unknown executor, or Ray where it is not installed or not reachable, before any work."""
    if executor not in EXECUTORS:
        raise DatasetError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        require_ray(address)


def render_jobs(executor: str, jobs: list[ShardPlan], out: Path, renderer_cls: type, render_config: RenderConfig,
                shard_config: ShardConfig, workers: int, address: str | None,
                landed: Callable[[ShardRecord], None], report: Callable[[int], None]) -> None:
    """Render `jobs` with `executor` ("local" or "ray"; see the module docstring)."""
    if executor == "ray" and jobs:
        try:
            render_with_ray(jobs, out, renderer_cls, render_config, shard_config, workers, address, landed, report)
        finally:
            sweep_temp(out)
    else:
        render_local(jobs, out, renderer_cls, render_config, shard_config, workers, landed, report)


_WORKER: dict = {}  # per-process state, set by _init_worker


def _init_worker(renderer_cls: type, render_config: RenderConfig, shard_config: ShardConfig, out: str, report,
                 parent: int) -> None:
    die_with_parent(parent)
    _WORKER.update(renderer=renderer_cls(render_config), shard_config=shard_config, out=Path(out), report=report)


def _report_to_queue(n: int) -> None:
    _WORKER["report"].put(n)


def _worker_shard(shard: ShardPlan) -> ShardRecord:
    return render_shard(shard, _WORKER["renderer"], _WORKER["shard_config"], _WORKER["out"], _report_to_queue)


def render_shard(shard: ShardPlan, renderer, shard_config: ShardConfig, out: Path, report: Callable[[int], None]) -> ShardRecord:
    """Render every task of one shard and write it; `report(n)` is called every REPORT_EVERY rows."""
    rows = []
    for i, task in enumerate(shard.tasks, start=1):
        try:
            image, params = renderer.render(task)
        except Exception as exc:  # name the style and its file: a damaged font is the usual cause
            raise DatasetError(f"rendering {shard.name} failed on {task.text!r} in style {task.style.id} "
                               f"({task.style.cache_path}): {type(exc).__name__}: {exc}; "
                               "`synth fonts check` tests every installed file") from exc
        rows.append(sample_row(
            image, params, semantic_id=task.semantic_id, lang=task.lang, text=task.text, style=task.style.id,
            style_kind=task.style.kind, split=task.style.split.value, seed=task.seed,
            png_level=shard_config.png_compression,
        ))
        if i % REPORT_EVERY == 0:
            report(REPORT_EVERY)
    record = write_shard(out, shard.name, rows, shard_config)
    if len(rows) % REPORT_EVERY:
        report(len(rows) % REPORT_EVERY)
    return record


def render_local(jobs: list[ShardPlan], out: Path, renderer_cls: type, render_config: RenderConfig,
            shard_config: ShardConfig, workers: int, landed: Callable[[ShardRecord], None],
            report: Callable[[int], None]) -> None:
    if not jobs:
        return
    if workers <= 1 or len(jobs) == 1:
        renderer = renderer_cls(render_config)
        for shard in jobs:
            try:
                record = render_shard(shard, renderer, shard_config, out, report)
            except DatasetError:
                raise
            except Exception as exc:
                raise DatasetError(f"rendering {shard.name} failed: {type(exc).__name__}: {exc}") from exc
            landed(record)
        return
    # spawn, not fork: the CLI's progress bar runs a thread, and forking a threaded process can deadlock.
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
        initargs=(renderer_cls, render_config, shard_config, str(out), reports, os.getpid()),
    )
    pending = {pool.submit(_worker_shard, shard): shard for shard in jobs}
    try:
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(reports, report)
            for future in finished:
                shard = pending.pop(future)
                try:
                    landed(future.result())
                except BrokenProcessPool:
                    raise DatasetError(
                        f"a worker process died while rendering {shard.name}; finished shards are kept — "
                        f"re-run the same command to resume"
                    ) from None
                except DatasetError:
                    raise
                except Exception as exc:
                    raise DatasetError(f"rendering {shard.name} failed: {type(exc).__name__}: {exc}") from exc
        pool.shutdown(wait=True)  # a worker's last reports reach the queue when it exits (its feeder flushes)
        _drain(reports, report)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        reports.close()
        sweep_temp(out)  # a killed worker leaves its half-written temporary behind


def _drain(reports, report: Callable[[int], None]) -> None:
    while True:
        try:
            n = reports.get_nowait()
        except queue_lib.Empty:
            return
        report(n)


# --- Ray --------------------------------------------------------------------------------------------

PROBE_SECONDS = 5.0


class ShardActor:
    """Holds one renderer; renders a shard into scratch space and hands back (record, file bytes)."""

    def __init__(self, renderer_cls: type, render_config: RenderConfig, shard_config: ShardConfig) -> None:
        self.renderer = renderer_cls(render_config)
        self.shard_config = shard_config

    def render(self, shard: ShardPlan) -> tuple[ShardRecord, bytes]:
        with tempfile.TemporaryDirectory(prefix="synth-ray-") as scratch:
            (Path(scratch) / shard.name).parent.mkdir(parents=True, exist_ok=True)
            record = render_shard(shard, self.renderer, self.shard_config, Path(scratch), lambda n: None)
            return record, (Path(scratch) / shard.name).read_bytes()


def require_ray(address: str | None = None) -> None:
    """Raise the one-line DatasetError naming the fix when Ray is not installed, or when nothing answers at
    `address` (HOST:PORT or ray://HOST:PORT; "auto" and "local" are Ray's own to resolve). The probe is ours
    because `ray.init` retries an address where no cluster runs for minutes before it gives up."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise DatasetError("`executor='ray'` needs Ray: pip install '.[ray]' (or use the default local executor)") from None
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DatasetError(f"`address` {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise DatasetError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc} (start one with "
                           "`ray start --head`, or check the address)") from None


def render_with_ray(jobs: list[ShardPlan], out: Path, renderer_cls: type, render_config: RenderConfig,
                    shard_config: ShardConfig, workers: int, address: str | None,
                    landed: Callable[[ShardRecord], None], report: Callable[[int], None]) -> None:
    """Render `jobs` on Ray: a local Ray with `workers` CPUs when `address` is None, else the cluster at
    `address` ("auto", "ray://head:10001", …) with one actor per CPU it has. Each shard lands through
    `landed` as it arrives; `report(rows)` once per shard. The caller has run `require_ray(address)`."""
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DatasetError(f"cannot reach a Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    try:
        cpus = int(ray.cluster_resources().get("CPU", workers)) if address else workers
        actor = ray.remote(num_cpus=1)(ShardActor)
        actors = [actor.remote(renderer_cls, render_config, shard_config) for _ in range(max(1, min(cpus, len(jobs))))]
        try:
            for record, data in ActorPool(actors).map_unordered(lambda a, shard: a.render.remote(shard), jobs):
                final = out / record.name
                write_atomic(final, data)
                if sha256_file(final) != record.sha256:
                    final.unlink()
                    raise DatasetError(f"{record.name} arrived damaged from its Ray worker (sha256 differs); "
                                       "re-run the same command")
                landed(record)
                report(record.rows)
        except ray.exceptions.RayError as exc:
            raise DatasetError(f"a Ray task failed: {str(exc).strip().splitlines()[-1]}; finished shards "
                               "are kept — re-run the same command to resume") from None
    finally:
        if started_here:
            ray.shutdown()


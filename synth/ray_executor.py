"""Render shards on a Ray cluster (`synth render ... --executor ray [--address ADDR]`), an optional extra:
`pip install '.[ray]'`.

One Ray actor per CPU builds one renderer and renders whole shards, as a local pool worker does, with the
same `render_shard` function, so the bytes are the same. The actor writes the shard into its own scratch
folder and returns the file's bytes; this process writes them into the dataset (temporary name, then
rename) and checks them against the sha256 the actor computed. So the nodes need the package and the font
cache (`synth fonts fetch` on each, or a shared $SYNTH_CACHE), but no shared filesystem for the output.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from synth.files import sha256_file, write_atomic
from synth.manifest import DatasetError
from synth.plan import ShardPlan
from synth.render_config import RenderConfig
from synth.shards import ShardConfig, ShardRecord

PROBE_SECONDS = 5.0


class ShardActor:
    """Holds one renderer; renders a shard into scratch space and hands back (record, file bytes)."""

    def __init__(self, renderer_cls: type, render_config: RenderConfig, shard_config: ShardConfig) -> None:
        self.renderer = renderer_cls(render_config)
        self.shard_config = shard_config

    def render(self, shard: ShardPlan) -> tuple[ShardRecord, bytes]:
        from synth.dataset import render_shard  # here, not at import: dataset imports this module lazily

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
        raise DatasetError("--executor ray needs Ray: pip install '.[ray]' (or use the default local executor)") from None
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DatasetError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
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


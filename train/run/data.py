"""Reading synth shards for training and evaluation.

Two readers over the same Parquet shards (the schema of `synth.schema`):

- `ShardSet` (training): the co-occurrence sampler needs every row's (semantic ID, language) up front and
  random access to any row, so the training set is read once into memory — the label columns as arrays,
  the PNG bytes as one contiguous buffer plus offsets (the 262,800-image pre-training corpus is 1.5 GB).
  DataLoader workers are forked and share that buffer copy-on-write (plain NumPy buffers, no per-row Python
  objects whose reference counts would force copies). Each worker receives whole batches, so no row is
  decoded twice.
- `ShardStream` (evaluation, indexing): one pass over shards of any size with bounded memory; each worker
  reads its own shards (shard i goes to worker i mod n), so no row is read twice.

The text of a row is looked up through the lexicon from its (semantic ID, language): the gallery the model
is evaluated against is the lexicon, so training must see exactly those strings. A row whose stored text
does not match its lexicon entry means the shards came from another lexicon, and is refused.

Images: decoded to grey, fitted into the model's (height, width) keeping their aspect (shrunk or padded at
the right and bottom), and returned as ink intensity in [0, 1] (1 − grey/255; paper and padding are 0).
Training augmentation (`train.run.augment`) is seeded per (seed, epoch, batch), so it is the same with any number of
workers and after a resume.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from synth.lexicon import Lexicon
from synth.schema import IMAGE, LANG, SEMANTIC_ID, TEXT
from train.run import augment as augmentation
from train.run.images import decode
from train.run.shard_files import DataError, find_shards

REQUIRED = {IMAGE: "struct<bytes: binary, path: string>", SEMANTIC_ID: "int32", LANG: "string", TEXT: "string"}


def count_rows(roots: Sequence[Path]) -> int:
    """Rows in every shard of `roots` (from the Parquet footers), naming a shard that cannot be read."""
    total = 0
    for path in (p for root in roots for p in find_shards(root)):
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]}); "
                            "render it again (`synth verify` checks a whole set)") from None
    return total


def check_schema(path: Path) -> pa.Schema:
    """The shard's schema, after checking it has every column training reads, with the right types."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    for name, expected in REQUIRED.items():
        if name not in schema.names:
            raise DataError(f"{path}: missing column {name!r}; a synth shard has {', '.join(REQUIRED)} "
                            "(see synth/schema.py)")
        actual = schema.field(name).type
        ok = (pa.types.is_struct(actual) and actual.get_field_index("bytes") >= 0) if name == IMAGE else \
            (pa.types.is_integer(actual) if name == SEMANTIC_ID else pa.types.is_string(actual))
        if not ok:
            raise DataError(f"{path}: column {name!r} has type {actual}; expected {expected}")
    return schema


def lexicon_texts(lexicon: Lexicon, semantic_ids: np.ndarray, langs: np.ndarray, stored: Sequence[str],
                  where: str) -> np.ndarray:
    """The lexicon text of each row, after checking IDs exist and stored texts agree (case-insensitively)."""
    n = len(lexicon)
    bad = np.flatnonzero((semantic_ids < 0) | (semantic_ids >= n))
    if bad.size:
        raise DataError(f"{where}: semantic ID {int(semantic_ids[bad[0]])} is not in the lexicon ({n} entries, "
                        f"{lexicon.path.name}); pass the lexicon the shards were rendered from as `lexicon`")
    table = {lang: lexicon.texts(lang) for lang in np.unique(langs).tolist()}
    texts = np.empty(len(semantic_ids), dtype=object)
    for i, (sid, lang, text) in enumerate(zip(semantic_ids.tolist(), langs.tolist(), stored)):
        try:
            expected = table[lang][sid]
        except KeyError:
            raise DataError(f"{where}: row {i} has language {lang!r}; expected en, es or zh") from None
        if text.casefold() != expected.casefold():
            raise DataError(f"{where}: row {i} reads {text!r} but lexicon entry {sid} ({lang}) is {expected!r}; "
                            f"the shards were rendered from another lexicon: pass it as `lexicon`")
        texts[i] = expected
    return texts


def _image_bytes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """One contiguous uint8 buffer and int64 offsets (N + 1) from a chunked image struct column."""
    parts, offsets, total = [], [np.zeros(1, dtype=np.int64)], 0
    for chunk in column.chunks:
        binary = chunk.field("bytes").cast(pa.large_binary())
        if binary.null_count:
            raise DataError("image column has rows without PNG bytes")
        off = np.frombuffer(binary.buffers()[1], dtype=np.int64)[binary.offset: binary.offset + len(binary) + 1]
        data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)[off[0]: off[-1]]
        parts.append(data)
        offsets.append(off[1:] - off[0] + total)
        total += int(off[-1] - off[0])
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint8)), np.concatenate(offsets)


@dataclass
class ShardSet:
    """Rows of one or more datasets, in memory: labels as arrays, PNG bytes in one buffer."""

    semantic_ids: np.ndarray  # (N,) int64
    langs: np.ndarray         # (N,) str
    texts: np.ndarray         # (N,) object: the lexicon text of each row
    buffer: np.ndarray        # (total bytes,) uint8
    offsets: np.ndarray       # (N + 1,) int64
    sources: list[str]        # the shard files read, in row order

    @classmethod
    def load(cls, roots: Sequence[Path], lexicon: Lexicon, langs: Sequence[str] | None = None) -> ShardSet:
        ids, tags, texts, buffers, offsets, sources, total = [], [], [], [], [np.zeros(1, np.int64)], [], 0
        for root in roots:
            for path in find_shards(Path(root)):
                check_schema(path)
                table = pq.read_table(path, columns=[IMAGE, SEMANTIC_ID, LANG, TEXT])
                sid = table[SEMANTIC_ID].to_numpy().astype(np.int64)
                lang = np.asarray(table[LANG].to_pylist(), dtype=object)
                keep = np.isin(lang, list(langs)) if langs else np.ones(len(sid), bool)
                if not keep.any():
                    continue
                table = table.filter(pa.array(keep))
                sid, lang = sid[keep], lang[keep]
                texts.append(lexicon_texts(lexicon, sid, lang, table[TEXT].to_pylist(), str(path)))
                buf, off = _image_bytes(table[IMAGE])
                ids.append(sid)
                tags.append(lang)
                buffers.append(buf)
                offsets.append(off[1:] + total)
                total += len(buf)
                sources.append(str(path))
        if not ids:
            wanted = f" in languages {', '.join(langs)}" if langs else ""
            raise DataError(f"no rows{wanted} in {', '.join(map(str, roots))}")
        return cls(np.concatenate(ids), np.concatenate(tags).astype(str), np.concatenate(texts),
                   np.concatenate(buffers), np.concatenate(offsets), sources)

    def __len__(self) -> int:
        return len(self.semantic_ids)

    def png(self, row: int) -> np.ndarray:
        return self.buffer[self.offsets[row]: self.offsets[row + 1]]


_decoding: ShardSet | None = None  # the rows decode_all's workers read: inherited through fork, never pickled


def _decode_range(args: tuple[int, int, int, int, bool]) -> bytes:
    start, stop, height, width, crop = args
    ink = np.stack([decode(_decoding.png(r), height, width, crop) for r in range(start, stop)])
    return np.round(ink * 255).astype(np.uint8).tobytes()


def decode_all(shards: ShardSet, height: int, width: int, crop: bool = False, processes: int | None = None,
               chunk: int = 2048) -> np.ndarray:
    """Every row's image as the tower sees it, (N, height, width) uint8 ink (× 1/255), decoded once by
    `processes` forked workers (default: one per CPU). Training reads these instead of decoding each PNG
    every epoch: 1.1 GB for the 262,800-image corpus at 32×128, and ~60 s of one core saved per epoch."""
    global _decoding
    out = np.empty((len(shards), height, width), np.uint8)
    tasks = [(i, min(i + chunk, len(shards)), height, width, crop) for i in range(0, len(shards), chunk)]
    processes = max(1, min(processes or len(os.sched_getaffinity(0)), len(tasks)))
    cv2.setNumThreads(1)  # before forking (see batch_loader)
    _decoding, pool = shards, None
    try:
        if processes > 1:
            pool = multiprocessing.get_context("fork").Pool(processes)
        for (start, stop, *_), part in zip(tasks, pool.imap(_decode_range, tasks) if pool else map(_decode_range, tasks)):
            out[start:stop] = np.frombuffer(part, np.uint8).reshape(stop - start, height, width)
    finally:
        _decoding = None
        if pool is not None:
            pool.terminate()
    return out


class BatchDataset(Dataset):
    """Map-style dataset indexed by (epoch, batch index, rows, skip): returns the images and row numbers of
    `rows`, the part of a global batch that starts `skip` rows in (0 in one process). With `decoded` (the
    `decode_all` of the same rows) images are read from it instead of decoded from their PNG bytes."""

    def __init__(self, shards: ShardSet, height: int, width: int, augment: bool, seed: int,
                 level: str = "light", crop: bool = False, decoded: np.ndarray | None = None) -> None:
        self.shards, self.height, self.width, self.augment, self.seed = shards, height, width, augment, seed
        self.level, self.crop, self.decoded = level, crop, decoded

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, item: tuple[int, int, list[int], int]) -> dict[str, torch.Tensor]:
        epoch, index, rows, skip = item
        images = np.empty((len(rows), 1, self.height, self.width), np.float32)
        rng = np.random.default_rng([self.seed, epoch, index])  # one per global batch: batches are fixed by (seed, epoch)
        shape = (self.height, self.width)
        for _ in range(skip if self.augment else 0):
            augmentation.draw(rng, self.level, shape)  # the rows before ours (other ranks'): one stream
        for i, row in enumerate(rows):
            ink = (self.decoded[row] * np.float32(1 / 255) if self.decoded is not None
                   else decode(self.shards.png(row), self.height, self.width, self.crop))
            images[i, 0] = augmentation.apply(ink, augmentation.draw(rng, self.level, shape)) if self.augment else ink
        return {"images": torch.from_numpy(images), "rows": torch.as_tensor(rows, dtype=torch.int64)}


class EpochBatches(torch.utils.data.Sampler):
    """Yields (epoch, batch index, rows, skip) for the global batches of one epoch from `start` on (a resumed
    epoch skips the done ones). Of each batch, process `rank` of `world` gets the `rank`-th of `world` equal
    contiguous slices, which starts `skip` rows in."""

    def __init__(self, batches: list[list[int]], epoch: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.batches, self.epoch, self.start, self.rank, self.world = batches, epoch, start, rank, world

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[tuple[int, int, list[int]]]:
        for index in range(self.start, len(self.batches)):
            n = len(self.batches[index]) // self.world
            yield self.epoch, index, self.batches[index][self.rank * n:(self.rank + 1) * n], self.rank * n


def batch_loader(dataset: BatchDataset, batches: EpochBatches, workers: int) -> torch.utils.data.DataLoader:
    """DataLoader over whole batches: each worker decodes the batches it is given, none twice."""
    # OpenCV's thread pool only competes with the training step for the cores on images this small. Set in
    # this process, before workers fork: calling setNumThreads in a forked child whose parent already ran
    # OpenCV's pool deadlocks (seen in the tests).
    cv2.setNumThreads(1)
    return torch.utils.data.DataLoader(
        dataset, sampler=batches, batch_size=None, num_workers=workers, collate_fn=None,
        persistent_workers=False, prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(0),  # keeps the global torch RNG untouched (resume equality)
    )


class ShardStream(IterableDataset):
    """One pass over shards in batches of decoded images with their labels; workers split the shards."""

    def __init__(self, shards: Sequence[Path], height: int, width: int, batch_size: int = 256,
                 langs: Sequence[str] | None = None, crop: bool = False) -> None:
        self.shards, self.height, self.width, self.crop = list(shards), height, width, crop
        self.batch_size, self.langs = batch_size, set(langs) if langs else None
        for path in self.shards:
            check_schema(path)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id:: info.num_workers]
        for path in mine:
            start = 0  # row number of the batch's first row within the shard
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_size,
                                                           columns=[IMAGE, SEMANTIC_ID, LANG, TEXT]):
                first, start = start, start + batch.num_rows
                sid = batch.column(SEMANTIC_ID).to_numpy().astype(np.int64)
                lang = np.asarray(batch.column(LANG).to_pylist(), dtype=object)
                keep = np.flatnonzero(np.isin(lang, list(self.langs))) if self.langs else np.arange(len(sid))
                if keep.size == 0:
                    continue
                pngs = batch.column(IMAGE).field("bytes").to_pylist()
                images = np.stack([decode(pngs[i], self.height, self.width, self.crop) for i in keep])[:, None]
                yield {"images": torch.from_numpy(images), "semantic_ids": sid[keep], "langs": lang[keep].astype(str),
                       "texts": [batch.column(TEXT)[int(i)].as_py() for i in keep],
                       "shard": str(path), "rows": first + keep}

"""The paper's large-batch co-occurrence sampler.

A contrastive batch learns most when each semantic ID appears in it more than once, preferably in
different languages (the L_INV term pulls those together) and when the languages are balanced. The
sampler builds each epoch from *groups*: a group is `per_id` rows of one semantic ID, taken from its
languages in turn; groups of randomly ordered IDs, interleaved by starting language, are packed into
batches of `batch_size` rows. So a batch holds about batch_size / per_id distinct IDs, each (weakly) at
least twice — an ID whose rows run out contributes a smaller group — and, on a corpus with the same
rows per language, the same number of rows of each language (measured: at most 2 rows apart in a
1,460-row batch of the pretrain layout). Every row is used exactly once per epoch, and the order
depends only on (seed, epoch).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplerConfig:
    batch_size: int = 1024  # rows per batch; the paper uses about the number of semantic IDs
    per_id: int = 2  # rows of one semantic ID taken together (the co-occurrence); ≥ 2 to be useful
    seed: int = 0
    drop_last: bool = True  # a short final batch has few co-occurrences; training drops it by default

    def __post_init__(self) -> None:
        if self.per_id < 1 or self.batch_size < self.per_id:
            raise ValueError(f"need 1 ≤ per_id ≤ batch_size; got per_id={self.per_id}, batch_size={self.batch_size}")


class CoOccurrenceSampler:
    """Batches of row indices over rows labelled (semantic_id, lang); iterate once per epoch."""

    def __init__(self, semantic_ids: Sequence[int], langs: Sequence[str], config: SamplerConfig = SamplerConfig()) -> None:
        if len(semantic_ids) != len(langs):
            raise ValueError(f"{len(semantic_ids)} semantic IDs but {len(langs)} language tags")
        self.config = config
        self.epoch = 0
        pools: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for row, (sid, lang) in enumerate(zip(semantic_ids, langs)):
            pools[int(sid)][str(lang)].append(row)
        self._pools = {sid: {lang: np.asarray(rows) for lang, rows in sorted(by_lang.items())} for sid, by_lang in sorted(pools.items())}
        self.n_rows = len(semantic_ids)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (as torch's DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n_rows, self.config.batch_size)
        return full + (0 if self.config.drop_last or rest == 0 else 1)

    def _groups(self, rng: np.random.Generator) -> Iterator[list[int]]:
        # Each ID cycles through its own languages, so its per-language queues drain evenly; start
        # positions are spread evenly over the IDs, and every round interleaves the IDs by the language
        # their next group starts with, so any stretch of groups (a batch) holds the languages equally.
        queues = {sid: [list(rng.permutation(rows)) for rows in by_lang.values()] for sid, by_lang in self._pools.items()}
        turn = {sid: int(k) % len(queues[sid]) for k, sid in zip(rng.permutation(len(queues)), queues)}
        live = list(queues)
        while live:
            buckets: dict[int, list[int]] = defaultdict(list)
            for k in rng.permutation(len(live)):
                sid = live[int(k)]
                buckets[turn[sid] % len(queues[sid])].append(sid)
            lanes = [buckets[key] for key in sorted(buckets)]
            still = []
            for position in range(max(map(len, lanes))):
                for lane in lanes:
                    if position >= len(lane):
                        continue
                    sid = lane[position]
                    qs, group = queues[sid], []
                    while len(group) < self.config.per_id and any(qs):
                        q = qs[turn[sid] % len(qs)]
                        turn[sid] += 1
                        if q:
                            group.append(int(q.pop()))
                    yield group
                    if any(qs):
                        still.append(sid)
            live = sorted(still)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.config.seed, self.epoch])
        batch: list[int] = []
        for group in self._groups(rng):
            batch.extend(group)
            while len(batch) >= self.config.batch_size:
                yield batch[: self.config.batch_size]
                batch = batch[self.config.batch_size:]
        if batch and not self.config.drop_last:
            yield batch

from collections import Counter

import numpy as np
import pytest

from train.objectives.sampler import CoOccurrenceSampler, SamplerConfig


def _rows(n_ids=300, per_lang=4, langs=("en", "es", "zh")):
    ids, tags = [], []
    for sid in range(n_ids):
        for lang in langs:
            ids += [sid] * per_lang
            tags += [lang] * per_lang
    order = np.random.default_rng(0).permutation(len(ids))  # rows arrive in shard order, not grouped
    return [ids[i] for i in order], [tags[i] for i in order]


def test_every_row_once_per_epoch_and_batch_sizes():
    ids, langs = _rows()
    sampler = CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=128, drop_last=False))
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(np.ceil(len(ids) / 128))
    assert all(len(b) == 128 for b in batches[:-1])
    assert sorted(i for b in batches for i in b) == list(range(len(ids)))


def test_co_occurrence_and_language_balance():
    ids, langs = _rows()
    sampler = CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=120, per_id=2, seed=3))
    shared, cross = [], []
    for batch in sampler:
        counts = Counter(ids[i] for i in batch)
        shared.append(sum(counts[ids[i]] >= 2 for i in batch) / len(batch))
        by_lang = Counter(langs[i] for i in batch)
        assert max(by_lang.values()) - min(by_lang.values()) <= 0.25 * len(batch) / 3, by_lang
        pairs = [(batch[k], batch[k + 1]) for k in range(0, len(batch) - 1, 2)]
        cross.append(np.mean([langs[a] != langs[b] for a, b in pairs if ids[a] == ids[b]]))
    assert np.mean(shared) > 0.95  # nearly every row has a same-ID partner in its batch
    assert np.mean(cross) > 0.95  # and the partner is in another language


def test_deterministic_per_seed_and_epoch():
    ids, langs = _rows(n_ids=50)
    a = CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=30, seed=1))
    b = CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=30, seed=1))
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=30, seed=2))
    assert list(c) != first


def test_groups_take_per_id_rows_and_bad_config():
    ids, langs = _rows(n_ids=40, per_lang=2)
    batch = next(iter(CoOccurrenceSampler(ids, langs, SamplerConfig(batch_size=60, per_id=3))))
    groups = [batch[k:k + 3] for k in range(0, 60, 3)]
    assert all(len({ids[i] for i in g}) == 1 and len({langs[i] for i in g}) == 3 for g in groups)
    with pytest.raises(ValueError, match="need 1 ≤ per_id ≤ batch_size"):
        SamplerConfig(batch_size=1, per_id=2)
    with pytest.raises(ValueError, match="3 semantic IDs but 2 language tags"):
        CoOccurrenceSampler([1, 2, 3], ["en", "es"])

"""The auxiliary PHOC objective: targets against a brute-force reading of their definition, the loss
against its formula, and the training-only head through training, evaluation and fine-tuning."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synth.lexicon import load_lexicon
from tests.train_fixtures import make_tiny_bert, tiny_config, write_lexicon, write_shards
from train.objectives.phoc import LEVELS, PhocTargets, phoc_bits, phoc_loss, phoc_matrix, phoc_size


def brute_phoc(text: str, buckets: int) -> set[int]:
    """Character i of n covers [i/n, (i+1)/n); it is in region r of level L when at least half of its
    1,000 sample points fall in [r/L, (r+1)/L)."""
    chars = [c for c in text.lower() if c != " "]
    n, bits, offset = len(chars), set(), 0
    for level in LEVELS:
        for i, c in enumerate(chars):
            points = (i + (np.arange(1000) + 0.5) / 1000) / n
            for r in range(level):
                if ((points >= r / level) & (points < (r + 1) / level)).mean() >= 0.5:
                    bits.add((offset + r) * buckets + ord(c) % buckets)
        offset += level
    return bits


@pytest.mark.parametrize("text", ["a", "ab", "sol", "casa", "árbol", "Niño", "internacional", "世界", "自行车",
                                  "ice cream"])
@pytest.mark.parametrize("buckets", [7, 256])
def test_phoc_bits_by_brute_force(text, buckets):
    assert set(phoc_bits(text, buckets)) == brute_phoc(text, buckets)
    assert phoc_matrix([text], buckets).shape == (1, phoc_size(buckets)) == (1, sum(LEVELS) * buckets)


def test_phoc_of_a_two_letter_word_by_hand():
    # level 1: a, b; level 2: a | b; level 3: a | – | b; level 4: a a | b b
    expected = [(0, "a"), (0, "b"), (1, "a"), (2, "b"), (3, "a"), (5, "b"), (6, "a"), (7, "a"), (8, "b"), (9, "b")]
    assert phoc_bits("ab", 256) == [region * 256 + ord(c) for region, c in expected]


def test_latin_letters_keep_their_own_slots_at_256():
    letters = set("abcdefghijklmnopqrstuvwxyzáéíóúüñ")
    assert len({ord(c) % 256 for c in letters}) == len(letters)


def test_phoc_loss_is_the_region_mean_of_binary_cross_entropies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, phoc_size(2), generator=g)
    targets = (torch.rand(3, phoc_size(2), generator=g) > 0.5).float()
    p = torch.sigmoid(logits)
    expected = -(targets * p.log() + (1 - targets) * (1 - p).log()).sum() / (3 * sum(LEVELS))
    assert math.isclose(float(phoc_loss(logits, targets)), float(expected), rel_tol=1e-5)


def test_targets_of_rows_follow_their_texts():
    texts = np.array(["sol", "sun", "sol", "太阳"], dtype=object)
    targets = PhocTargets(texts, 16)
    rows = np.array([3, 0, 2, 1])
    assert np.array_equal(targets.of_rows(rows), phoc_matrix([texts[r] for r in rows], 16))


def test_the_head_trains_and_stays_out_of_retrieval(tmp_path):
    """A run with loss.phoc logs the term and saves the head; evaluation loads the run with no head; a
    fine-tune without the loss starts from it, and one with it starts from a run made without it."""
    lexicon = load_lexicon(write_lexicon(tmp_path / "lexicon.tsv"))
    bert, data = make_tiny_bert(tmp_path / "bert"), write_shards(tmp_path / "shards", per_id=2)
    from train.evaluate import evaluate, load_model
    from train.run.trainer import train_stage

    config = tiny_config(bert, **{"loss.objective": "prototype", "loss.use_inv": False, "loss.phoc": 0.5,
                                  "loss.phoc_buckets": 32})
    train_stage(config, [data], tmp_path / "aux", lexicon)
    records = [json.loads(line) for line in (tmp_path / "aux" / "metrics.jsonl").read_text().splitlines()]
    step = records[0]
    assert step["loss"] == pytest.approx(step["v2p"] + step["t2p"] + 0.5 * step["phoc"], rel=1e-5)
    weights = load_file(tmp_path / "aux" / "model.safetensors")
    assert weights["phoc_head.weight"].shape == (phoc_size(32), 576)
    model = load_model(tmp_path / "aux")[0]
    assert model.phoc_head is None and "phoc_head.weight" not in model.state_dict()
    assert evaluate(model, [data], lexicon)["n_images"] > 0

    plain = tiny_config(bert, **{"loss.objective": "prototype", "loss.use_inv": False})
    train_stage(plain, [data], tmp_path / "plain", lexicon)
    train_stage(plain, [data], tmp_path / "from-aux", lexicon, init=tmp_path / "aux")
    train_stage(config, [data], tmp_path / "from-plain", lexicon, init=tmp_path / "plain")
    assert "phoc_head.weight" not in load_file(tmp_path / "from-aux" / "model.safetensors")
    assert "phoc_head.weight" in load_file(tmp_path / "from-plain" / "model.safetensors")


def test_a_negative_weight_or_no_buckets_is_refused():
    from train.config import ConfigError, load_config

    for key, value in (("loss.phoc", -1.0), ("loss.phoc_buckets", 0)):
        with pytest.raises(ConfigError, match="loss.phoc must be ≥ 0 and loss.phoc_buckets ≥ 1"):
            load_config("cpu-small", "pretrain", {key: value})

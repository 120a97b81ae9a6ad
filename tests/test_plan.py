import dataclasses
import os
from collections import Counter

import pytest

from synth.dataset.corpus import corpus_names, load_corpus
from synth.dataset.plan import PlanConfig, PlanError, derive_seed, parse_ids, plan_tasks
from synth.fonts.catalogue import load_catalogue
from synth.fonts.fetch import FetchError
from synth.lexicon import load_lexicon
from tests.dataset_fixtures import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        w = make_world(tmp_path_factory.mktemp("plan"), mp)
        yield w, load_lexicon(w.lexicon), load_catalogue(w.catalogue)


def test_derive_seed_is_a_stable_uint64_of_its_parts():
    seed = derive_seed(0, 12, "es", "caveat-400", 3)
    assert seed == derive_seed(0, 12, "es", "caveat-400", 3) == 0xEA022CE8FEF7755C
    assert 0 <= seed < 2**64
    others = {derive_seed(1, 12, "es", "caveat-400", 3), derive_seed(0, 13, "es", "caveat-400", 3),
              derive_seed(0, 12, "en", "caveat-400", 3), derive_seed(0, 12, "es", "caveat-700", 3),
              derive_seed(0, 12, "es", "caveat-400", 4), derive_seed(0, 1, "2es", "caveat-400", 3)}
    assert seed not in others and len(others) == 6


def test_per_style_counts_skips_and_order(world):
    _, lexicon, catalogue = world
    plan = plan_tasks(PlanConfig(mode="per_style", samples=2), lexicon, catalogue)
    # 8 IDs × 2 train styles × 2 samples per language, minus the skipped pairs × 2
    assert plan.skipped == {"es": {"latin-noenye": 3}, "zh": {"han-nohai": 1}}
    assert plan.skipped_pairs == 4
    assert Counter(t.lang for t in plan.tasks) == {"en": 32, "es": 26, "zh": 30}
    keys = [(t.semantic_id, t.lang, t.style.id, t.index) for t in plan.tasks]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert not any(t.style.id == "latin-noenye" and "ñ" in t.text for t in plan.tasks)
    assert all(t.seed == derive_seed(0, t.semantic_id, t.lang, t.style.id, t.index) for t in plan.tasks)


def test_per_id_is_exact_and_balanced_over_styles(world):
    _, lexicon, catalogue = world
    plan = plan_tasks(PlanConfig(fonts="all", mode="per_id", samples=7, seed=9), lexicon, catalogue)
    per_key = Counter((t.semantic_id, t.lang) for t in plan.tasks)
    assert set(per_key.values()) == {7} and len(per_key) == 8 * 3
    for (semantic_id, lang), _ in per_key.items():
        styles = Counter(t.style.id for t in plan.tasks if (t.semantic_id, t.lang) == (semantic_id, lang))
        assert max(styles.values()) - min(styles.values()) <= 1  # ⌊7/R⌋ or ⌈7/R⌉ each
        indices = sorted(t.index for t in plan.tasks if (t.semantic_id, t.lang) == (semantic_id, lang))
        assert indices[0] == 0
    # niño: only latin-full and latin-held can draw it, so 7 = 4 + 3 over those two
    nino = Counter(t.style.id for t in plan.tasks if t.text == "niño")
    assert set(nino) == {"latin-full", "latin-held"} and sorted(nino.values()) == [3, 4]
    # the spread differs between IDs (seeded permutation per (ID, language)), yet is the same every time
    assert plan.tasks == plan_tasks(PlanConfig(fonts="all", mode="per_id", samples=7, seed=9), lexicon, catalogue).tasks


def test_plan_does_not_depend_on_catalogue_order_or_id_slice(world):
    _, lexicon, catalogue = world
    config = PlanConfig(mode="per_id", samples=5, seed=3)
    full = plan_tasks(config, lexicon, catalogue)
    shuffled = dataclasses.replace(catalogue, styles=tuple(reversed(catalogue.styles)))
    assert plan_tasks(config, lexicon, shuffled).tasks == full.tasks
    part = plan_tasks(dataclasses.replace(config, ids="2:5"), lexicon, catalogue)
    assert part.tasks == tuple(t for t in full.tasks if 2 <= t.semantic_id < 5)


def test_held_out_styles_never_in_a_train_plan(world):
    _, lexicon, catalogue = world
    train = plan_tasks(PlanConfig(fonts="train"), lexicon, catalogue)
    assert {t.style.split.value for t in train.tasks} == {"train"}
    assert not {t.style.id for t in train.tasks} & {"latin-held", "han-held"}
    held = plan_tasks(PlanConfig(fonts="held-out"), lexicon, catalogue)
    assert {t.style.id for t in held.tasks} == {"latin-held", "han-held"}


def test_shards_are_contiguous_runs_per_series(world):
    _, lexicon, catalogue = world
    plan = plan_tasks(PlanConfig(fonts="all", rows_per_shard=10), lexicon, catalogue)
    shards = plan.shards()
    names = [s.name for s in shards]
    assert names[0] == "data/train-00000-of-00005.parquet" and names[-1] == "data/held_out-00002-of-00003.parquet"
    assert sum(len(s.tasks) for s in shards) == len(plan.tasks)
    assert all(len(s.tasks) == 10 for s in shards[:4])
    for series in ("train", "held_out"):
        tasks = [t for s in shards if s.name.startswith(f"data/{series}-") for t in s.tasks]
        assert tasks == sorted(tasks, key=lambda t: (t.semantic_id, t.lang, t.style.id, t.index))
    assert all(s.id_range[0] <= s.id_range[1] for s in shards)


def test_bad_options_are_one_line_errors(world):
    _, lexicon, catalogue = world
    with pytest.raises(PlanError, match=r"unknown language 'fr'; expected one of en, es, zh"):
        PlanConfig(langs=("fr",))
    with pytest.raises(PlanError, match="unknown font split 'test'"):
        PlanConfig(fonts="test")
    with pytest.raises(PlanError, match="seed must be"):
        PlanConfig(seed=-1)
    with pytest.raises(PlanError, match=r"out of range: the lexicon has 8 entries \(IDs 0:8\)"):
        plan_tasks(PlanConfig(ids="1460"), lexicon, catalogue)
    with pytest.raises(PlanError, match="neither a range"):
        parse_ids("a:b", 8)
    with pytest.raises(PlanError, match="selects no IDs"):
        parse_ids("5:5", 8)
    assert parse_ids("", 8) == range(8) and parse_ids("3", 8) == range(3) and parse_ids("2:6", 8) == range(2, 6)


def test_zero_renderable_and_missing_font(world):
    w, lexicon, catalogue = world
    only_noenye = dataclasses.replace(catalogue, styles=tuple(s for s in catalogue.styles if s.id == "latin-noenye"))
    with pytest.raises(PlanError, match=r"no es entry in IDs 1:3 can be rendered by the train styles \(latin-noenye\)"):
        plan_tasks(PlanConfig(langs=("es",), ids="1:3"), lexicon, only_noenye)
    no_han = dataclasses.replace(catalogue, styles=tuple(s for s in catalogue.styles if s.id != "han-held"))
    with pytest.raises(PlanError, match=r"has no held-out styles for han \(zh\)"):
        plan_tasks(PlanConfig(langs=("zh",), fonts="held-out"), lexicon, no_han)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTH_CACHE", str(w.root / "empty-cache"))
        with pytest.raises(FetchError, match="is not installed"):
            plan_tasks(PlanConfig(langs=("en",)), lexicon, catalogue)


def test_corpus_presets():
    assert corpus_names() == ["in-domain", "ood-en", "ood-es", "ood-zh", "pretrain"]
    expected = {"pretrain": 262_800, "in-domain": 65_700, "ood-en": 7_300, "ood-es": 7_300, "ood-zh": 7_300}
    seeds = set()
    for name, rows in expected.items():
        preset = load_corpus(name)
        plan = preset.plan
        assert plan.mode == "per_id" and plan.ids == "1460" and preset.distort == "default"
        assert 1460 * len(plan.langs) * plan.samples == rows
        assert plan.fonts == ("held-out" if name.startswith("ood") else "train")
        seeds.add(plan.seed)
    assert len(seeds) == len(expected)
    assert load_corpus("ood-es").plan.langs == ("es",)
    with pytest.raises(PlanError, match="unknown corpus preset 'tiny'; valid presets: in-domain, ood-en, ood-es, ood-zh, pretrain"):
        load_corpus("tiny")


_REAL_CACHE = os.environ.get("SYNTH_CACHE")  # read before the module fixture points it at a tiny cache
_REAL_FONTS = load_catalogue().get("lxgw-wenkai-400").cache_path.is_file()


@pytest.mark.skipif(not _REAL_FONTS and not os.environ.get("CI"), reason="fonts not fetched (run `synth fonts fetch`)")
@pytest.mark.parametrize("name", ["ood-es", "ood-zh"])
def test_real_presets_plan_their_documented_counts(name, monkeypatch):
    if _REAL_CACHE is None:
        monkeypatch.delenv("SYNTH_CACHE", raising=False)
    else:
        monkeypatch.setenv("SYNTH_CACHE", _REAL_CACHE)
    plan = plan_tasks(load_corpus(name).plan, load_lexicon(), load_catalogue())
    assert len(plan.tasks) == 7_300 and not plan.unrenderable
    assert {t.style.split.value for t in plan.tasks} == {"held-out"}

"""Benchmark helpers: the accuracy benchmark's scoring against its targets, and where the peers' fonts come from."""

from tests.benchmarks.bench_accuracy import TARGETS, figures, table
from tests.benchmarks.peers import DEFAULT_FONT_IDS, default_fonts


def report(within: dict[str, float], cross: float) -> dict:
    return {"within": {lang: {"acc@1": v} for lang, v in within.items()}, "cross": {"mean": {"acc@1": cross}}}


def test_figures_and_targets():
    ood = report({"en": 0.9, "es": 0.6, "zh": 0.3, "all": 0.6}, 0.54)
    in_domain = report({"en": 1.0, "es": 0.9, "zh": 0.8, "all": 0.9}, 0.85)
    values = figures(ood, in_domain, 30 * 60)
    assert values["cross_ratio"] == 0.54 / 0.6 and values["in_domain"] == 0.9 and values["train_minutes"] == 30
    rows = {line.split()[0]: line for line in table("full", values).splitlines()[2:]}
    assert rows["ood_en"].endswith("yes") and rows["ood_es"].endswith("NO")  # 0.6 < 0.80
    assert rows["train_minutes"].endswith("yes") and rows["cross_ratio"].endswith("yes")  # 0.9 ≥ 0.85
    assert rows["in_domain_en"].split()[-1] == "1.0000"  # no target: the figure alone
    assert set(TARGETS["quick"]) <= set(values)


def test_peer_fonts_come_from_the_project_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTH_CACHE", raising=False)  # the default cache, as on a fresh machine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fonts = tmp_path / "synth" / "fonts"
    fonts.mkdir(parents=True)
    for style in DEFAULT_FONT_IDS[:2]:
        (fonts / f"{style}.ttf").write_bytes(b"")
    assert default_fonts() == [str(fonts / f"{s}.ttf") for s in DEFAULT_FONT_IDS[:2]]

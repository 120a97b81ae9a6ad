"""`train report`: the paper-style results page, every number measured in the same process that writes it.

From a run and the evaluation sets it builds:
- within-language, in-domain and out-of-distribution: Acc@1/3/5, MRR, NES, image-tower parameters and
  batch-1 one-thread latency, for our model and the OCR baselines (their `train baseline --out` JSONs);
- the six cross-lingual directions and their mean, and the R/D ratio;
- an ablation table over the loss terms, from the runs named (pre-trained only, or fine-tuned: read from
  each run's own config);
- a 2-D t-SNE map of image embeddings coloured by language (the paper's Figure 4), as a PNG;
- beside each table, the data, the scale and the command; and where we fall short of the paper, a line
  saying so, against the paper's headline figures (`PAPER`).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synth.lexicon import Lexicon
from synth.manifest import read_manifest
from train.checkpoint import read_run_config
from train.evaluate import DIRECTIONS, LANG_ORDER, embed_images, evaluate, load_model
from train.image_tower import count_parameters

# The reference paper's headline figures (DESIGN.md §2): OOD and in-domain within-language Acc@1, OOD MRR,
# cross-lingual mean Acc@1, and the RapidOCR two-stage baseline's Acc@1.
PAPER = {"ood_acc1": 0.8605, "ood_mrr": 0.9094, "in_domain_acc1": 0.9726, "cross_mean_acc1": 0.8280,
         "rapidocr_in_domain_acc1": 0.9098, "rapidocr_ood_acc1": 0.5863, "latency_ms": 2.89}


class ReportError(ValueError):
    """The report cannot be made from what was given; the message names the input and the fix."""


@dataclass
class ReportInputs:
    run: Path
    ood: list[Path]
    in_domain: list[Path] = field(default_factory=list)
    baselines: list[Path] = field(default_factory=list)  # `train baseline --out` JSON files
    ablation: dict[str, Path] = field(default_factory=dict)  # name → run
    ablation_data: list[Path] = field(default_factory=list)  # the ablation's evaluation sets (default: ood)
    elsewhere: dict[str, Path] = field(default_factory=dict)  # machine → a run trained and evaluated there

    def command(self, out: Path, plot: Path) -> str:
        """The `train report` command line that makes this report."""
        parts = ["train report", f"--run {self.run}", *(f"--ood {p}" for p in self.ood),
                 *(f"--in-domain {p}" for p in self.in_domain), *(f"--baseline {p}" for p in self.baselines),
                 *(f"--ablation {name}={p}" for name, p in self.ablation.items()),
                 *(f"--ablation-data {p}" for p in self.ablation_data),
                 *(f"--elsewhere '{name}={p}'" for name, p in self.elsewhere.items()), f"--out {out}", f"--plot {plot}"]
        return " \\\n  ".join(parts)


@torch.no_grad()
def latency_ms(model, repeats: int = 200, warmup: int = 20) -> float:
    """Median batch-1 forward time of the image tower on one CPU thread, in eager PyTorch."""
    tower = model.image.cpu().eval()
    c = model.config.image
    x = torch.rand(1, 1, c.image_height, c.image_width)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            tower(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            tower(x)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000 * float(np.median(times))


def describe_data(root: Path) -> str:
    """One line on a dataset: its name, rows per language and how it was made (from its manifest)."""
    manifest = read_manifest(Path(root)) or {}
    counts = manifest.get("counts", {})
    by_lang = ", ".join(f"{k} {v:,}" for k, v in counts.get("by_lang", {}).items())
    made = manifest.get("command") or "no manifest"
    source = manifest.get("config", {}).get("source")
    kind = f"real handwriting imported from {source}" if source else "synthetic"
    return f"`{Path(root).name}`: {counts.get('rows', 0):,} {kind} images ({by_lang}); made by `{made}`"


def tsne_plot(model, roots: Sequence[Path], png: Path, per_lang: int = 600, ids: int = 40, seed: int = 0) -> dict:
    """t-SNE of image embeddings for `ids` semantic IDs drawn at random, ≤ `per_lang` images per language,
    coloured by language; returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    images = embed_images(model, roots)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.unique(images["semantic_ids"]), min(ids, len(np.unique(images["semantic_ids"]))), replace=False)
    keep = []
    for lang in LANG_ORDER:
        rows = np.flatnonzero((images["langs"] == lang) & np.isin(images["semantic_ids"], chosen))
        keep.append(rows if len(rows) <= per_lang else rng.choice(rows, per_lang, replace=False))
    keep = np.sort(np.concatenate(keep))
    if len(keep) < 5:
        raise ReportError(f"too few images ({len(keep)}) for an embedding map")
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(keep) - 1) / 3), init="pca", random_state=seed).fit_transform(
        images["embeds"][keep])
    fig, ax = plt.subplots(figsize=(6.5, 6))
    colours = {"en": "tab:blue", "es": "tab:orange", "zh": "tab:green"}
    for lang in LANG_ORDER:
        mask = images["langs"][keep] == lang
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.7, c=colours[lang], label=lang)
    ax.set(title=f"t-SNE of image embeddings: {len(chosen)} semantic IDs, {len(keep):,} images", xticks=[], yticks=[])
    ax.legend(markerscale=3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"images": len(keep), "ids": len(chosen)}


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _run_summary(run: Path) -> dict:
    provenance = read_run_config(run)
    config = provenance["config"]
    final = run / "model.json"
    info = json.loads(final.read_text(encoding="utf-8")) if final.is_file() else {}
    metrics = run / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()] if metrics.is_file() else []
    steps = [r for r in records if "images_per_s" in r]
    data = [Path(d["path"]).name for d in provenance.get("data", [])]
    batch = config["batch"]["batch_size"]
    step_seconds = sum(batch / r["images_per_s"] for r in steps)  # time inside the steps alone
    return {"stage": config["stage"], "init": provenance.get("init"), "loss": config["loss"], "data": data,
            "image": f"{config['model']['image']['image_height']}×{config['model']['image']['image_width']}",
            "batch": config["batch"]["batch_size"], "lr": config["optim"]["lr"], "epochs": info.get("epochs"),
            "steps": info.get("steps", steps[-1]["step"] if steps else None),
            "images_per_s": float(np.median([r["images_per_s"] for r in steps])) if steps else None,
            "step_seconds": step_seconds, "images_per_s_mean": len(steps) * batch / step_seconds if steps else None}


def elsewhere_summary(run: Path, ood: Sequence[Path], in_domain: Sequence[Path]) -> dict:
    """A run trained and evaluated on another machine, from what it saved: its config, metrics and the
    `train eval` reports in RUN/eval. Reports are matched to the sets here by folder names (the paths were
    the other machine's). Nothing is re-measured, so the run's weights need not travel."""
    summary = _run_summary(run)
    found: dict[str, dict] = {}
    for report in sorted((run / "eval").glob("*.json")):
        saved = json.loads(report.read_text(encoding="utf-8"))
        names = sorted(Path(d).name for d in saved.get("data", []))
        for kind, roots in (("ood", ood), ("in_domain", in_domain)):
            if roots and names == sorted(Path(r).name for r in roots):
                found[kind] = saved
    if "ood" not in found:
        raise ReportError(f"--elsewhere {run}: no report in {run / 'eval'} covers the --ood sets "
                          f"({', '.join(Path(r).name for r in ood)}); run `train eval --cross-lingual` on them there")
    return {"summary": summary, **found}


def _baseline_for(baselines: list[dict], roots: Sequence[Path]) -> dict[str, dict]:
    """name → report of each baseline run on exactly these datasets."""
    wanted = sorted(str(Path(r).resolve()) for r in roots)
    return {b["baseline"]: b for b in baselines if sorted(b.get("data", [])) == wanted}


def build_report(inputs: ReportInputs, lexicon: Lexicon, out: Path, plot: Path,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Evaluate, measure and write the Markdown report `out` and the plot `plot`; returns the numbers."""
    say = progress or (lambda _msg: None)
    baselines = []
    for path in inputs.baselines:
        try:
            baselines.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{path}: not a baseline report ({exc}); write one with `train baseline --out`") from None
    say("loading the run")
    model, _provenance, run = load_model(inputs.run, device="cpu")
    summary = _run_summary(run)
    say("measuring latency")
    params = count_parameters(model.image)
    latency = latency_ms(model)
    results: dict = {"run": str(run), "parameters": params, "latency_ms": latency, "summary": summary, "sets": {}}
    for kind, roots in (("ood", inputs.ood), ("in_domain", inputs.in_domain)):
        for root in roots:
            say(f"evaluating {Path(root).name}")
            results["sets"][str(root)] = {"kind": kind, "report": evaluate(model, [root], lexicon, cross_lingual=True),
                                          "baselines": _baseline_for(baselines, [root])}
    if inputs.ood:
        say("evaluating all OOD sets together (cross-lingual)")
        results["ood_all"] = evaluate(model, inputs.ood, lexicon, cross_lingual=True)
    ablation = {}
    for name, path in inputs.ablation.items():
        say(f"ablation: {name}")
        abl_model, _, abl_run = load_model(path, device="cpu")
        ablation[name] = {"summary": _run_summary(abl_run),
                          "report": evaluate(abl_model, inputs.ablation_data or inputs.ood, lexicon)}
    results["ablation"] = ablation
    results["elsewhere"] = {name: elsewhere_summary(Path(path), inputs.ood, inputs.in_domain)
                            for name, path in inputs.elsewhere.items()}
    say("embedding map")
    results["plot"] = tsne_plot(model, inputs.ood, plot)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, inputs, out, plot), encoding="utf-8")
    return results


def _within_table(results: dict, kind: str, summary_params: int, latency: float) -> list[str]:
    head = ["| set | method | queries | Acc@1 | Acc@3 | Acc@5 | MRR | NES | parameters | ms/image |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines = []
    for root, entry in results["sets"].items():
        if entry["kind"] != kind:
            continue
        report = entry["report"]
        for lang, s in report["within"].items():
            if lang == "all" and len(report["within"]) == 2:
                continue  # one language: "all" repeats it
            lines.append(f"| {Path(root).name} ({lang}) | ours | {s['n_queries']:,} | {_fmt(s['acc@1'])} | "
                         f"{_fmt(s['acc@3'])} | {_fmt(s['acc@5'])} | {_fmt(s['mrr'])} | {_fmt(s['nes'])} | "
                         f"{summary_params:,} | {latency:.2f} |")
            for name, b in sorted(entry["baselines"].items()):
                t = b["within"].get(lang)
                if t:
                    limit = f" (≤ {b['limit_per_language']:,}/lang)" if b.get("limit_per_language") else ""
                    lines.append(f"| {Path(root).name} ({lang}) | {name}{limit} | {t['n_queries']:,} | {_fmt(t['acc@1'])} | "
                                 f"{_fmt(t['acc@3'])} | {_fmt(t['acc@5'])} | {_fmt(t['mrr'])} | {_fmt(t['nes'])} | – | "
                                 f"{t['latency_ms']:.1f} |")
    return head + lines if lines else []


def _elsewhere_section(runs: dict[str, dict], inputs: ReportInputs) -> list[str]:
    if not runs:
        return []
    langs = [lang for lang in LANG_ORDER if any(lang in r["ood"]["within"] for r in runs.values())]
    lines = ["## Runs on other machines", "",
             ("Trained and evaluated on the machine named, on sets built there by the same `synth corpus` presets "
              f"as {', '.join(Path(p).name for p in [*inputs.ood, *inputs.in_domain])} here (same seeds and "
              "fonts, so the same images). Read from each run's saved `train eval` reports, not re-measured "
              "on this page. Time and images/s count the training steps alone (no start-up, checkpoints or "
              "evaluation)."), "",
             "| machine | images | batch | L_INV | epochs | steps | training time | images/s | "
             + " | ".join(f"OOD {lang} Acc@1" for lang in langs) + " | OOD cross-lingual mean Acc@1 | in-domain Acc@1 |",
             "|---|---|---:|:-:|---:|---:|---:|---:|" + "---:|" * (len(langs) + 2)]
    for name, r in runs.items():
        s, within = r["summary"], r["ood"]["within"]
        mean = r["ood"].get("cross", {}).get("mean", {}).get("acc@1")
        in_domain = r.get("in_domain", {}).get("within", {}).get("all", {}).get("acc@1")
        lines.append(f"| {name} | {s['image']} | {s['batch']:,} | {'✓' if s['loss']['use_inv'] else '–'} | {s['epochs']} | "
                     f"{s['steps']:,} | {s['step_seconds'] / 60:.1f} min | {s['images_per_s_mean'] or 0:,.0f} | "
                     + " | ".join(_fmt(within.get(lang, {}).get("acc@1")) for lang in langs)
                     + f" | {_fmt(mean)} | {_fmt(in_domain)} |")
    return lines + [""]


def markdown(results: dict, inputs: ReportInputs, out: Path, plot: Path) -> str:
    s = results["summary"]
    loss = s["loss"]
    lam = f" with λ = {loss['lam']}" if loss["use_inv"] else ""
    terms = "+".join(t for t, on in (("L_v2t", loss["use_v2t"]), ("L_t2v", loss["use_t2v"]), ("L_INV", loss["use_inv"])) if on)
    lines = [
        "# Results",
        "",
        ("Generated by `train report`; every number below was measured by the command at the end of this page, "
        "in one process, on the machine it names. The run's scale is stated: a CPU-scale run is not the "
        "paper's experiment, and its numbers are not a reproduction of the paper's. The discussion of "
        "these results is in [results-discussion.md](results-discussion.md)."),
        "",
        (f"**Machine.** {platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.platform()}."),
        "",
        (f"**Model.** `{inputs.run}` ({s['stage']}{', from ' + str(s['init']) if s['init'] else ''}): images {s['image']}, "
        f"batch {s['batch']}, lr {s['lr']}, {s['epochs']} epoch(s), {s['steps']} steps, median "
        f"{_fmt(s['images_per_s'], 0)} images/s; loss {terms}{lam}"
        f"{', label-aware' if loss['label_aware'] else ''}{', lexicon negatives for L_v2t' if loss.get('negatives') == 'lexicon' else ''}. "
        f"Image tower {results['parameters']:,} parameters; batch-1 one-thread eager latency "
        f"{results['latency_ms']:.2f} ms (paper: {PAPER['latency_ms']} ms on an RTX 4090)."),
        "",
        "**Data.**",
        "",
        *[f"- {describe_data(Path(r))}" for r in [*inputs.ood, *inputs.in_domain]],
        "",
        ("Gallery: the query language's lexicon entries for the semantic IDs in each set; ranks pessimistic on "
        "ties. NES: normalised edit similarity of the top-ranked entry's text to the truth (for OCR, of the "
        "recognised string). OCR latency is per image, single-threaded, recognition only."),
        "",
    ]
    for kind, title, paper in (("ood", "Within-language, out-of-distribution (held-out styles)", PAPER["ood_acc1"]),
                               ("in_domain", "Within-language, in-domain (train styles, new samples)", PAPER["in_domain_acc1"])):
        label = {"ood": "out-of-distribution", "in_domain": "in-domain"}[kind]
        table = _within_table(results, kind, results["parameters"], results["latency_ms"])
        if not table:
            continue
        lines += [f"## {title}", "", *table, ""]
        ours = [e["report"]["within"]["all"]["acc@1"] for e in results["sets"].values() if e["kind"] == kind]
        worst = min(ours)
        if worst < paper:
            lines += [(f"Short of the paper: its {label} Acc@1 is {paper:.4f}; ours is "
                      f"{', '.join(_fmt(x) for x in ours)} on the sets above."), ""]
    if results.get("ood_all"):
        r = results["ood_all"]
        cross = r.get("cross", {})
        lines += ["## Cross-lingual, out-of-distribution", "",
                  (f"Queries: the images of {', '.join(Path(p).name for p in inputs.ood)}; gallery: the other "
                  "language's entries; correct = same semantic ID."), "",
                  "| direction | queries | Acc@1 | Acc@3 | Acc@5 | MRR | NES |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name in [f"{a}→{b}" for a, b in DIRECTIONS] + ["mean"]:
            if name in cross:
                c = cross[name]
                n = f"{c['n_queries']:,}" if "n_queries" in c else ""
                lines.append(f"| {name} | {n} | {_fmt(c['acc@1'])} | {_fmt(c['acc@3'])} | {_fmt(c['acc@5'])} | "
                             f"{_fmt(c['mrr'])} | {_fmt(c['nes'])} |")
        mean = cross.get("mean", {}).get("acc@1")
        lines += ["", f"R/D ratio of the image embeddings over these sets: {_fmt(r.get('rd_ratio'))} (lower is better)."]
        if mean is not None and mean < PAPER["cross_mean_acc1"]:
            lines += ["", (f"Short of the paper: its cross-lingual mean Acc@1 is {PAPER['cross_mean_acc1']:.4f}; ours is "
                      f"{mean:.4f}.")]
        lines.append("")
    if results["ablation"]:
        data = inputs.ablation_data or inputs.ood
        lines += ["## Ablation over the loss terms", "",
                  ("Each row is its own run; all are evaluated within-language on "
                  f"{', '.join(Path(p).name for p in data)}."), "",
                  *([f"- {describe_data(Path(r))}" for r in inputs.ablation_data] + [""] if inputs.ablation_data else []),
                  "| run | L_v2t | L_t2v | L_INV | stage | trained on | image size | steps | Acc@1 | MRR |",
                  "|---|:-:|:-:|:-:|---|---|---|---:|---:|---:|"]
        for name, a in results["ablation"].items():
            lo, w = a["summary"]["loss"], a["report"]["within"]["all"]
            tick = {True: "✓", False: "–"}
            stage = "fine-tuned" if a["summary"]["stage"] == "finetune" else "pre-trained only"
            lines.append(f"| {name} | {tick[lo['use_v2t']]} | {tick[lo['use_t2v']]} | {tick[lo['use_inv']]} | {stage} | "
                         f"{', '.join(a['summary']['data'])} | {a['summary']['image']} | {a['summary']['steps']} | "
                         f"{_fmt(w['acc@1'])} | {_fmt(w['mrr'])} |")
        lines.append("")
    lines += _elsewhere_section(results["elsewhere"], inputs)
    rel = Path(plot).resolve().relative_to(Path(out).resolve().parent) if Path(plot).resolve().is_relative_to(
        Path(out).resolve().parent) else Path(plot).resolve()
    lines += ["## Embedding map", "",
              f"![t-SNE of image embeddings, coloured by language]({rel.as_posix()})", "",
              (f"{results['plot']['images']:,} out-of-distribution images of {results['plot']['ids']} semantic IDs drawn "
              "at random (seed 0). Language-agnostic embeddings would mix the colours within each cluster."), "",
              "## Command", "", "```sh", inputs.command(out, plot), "```", ""]
    return "\n".join(lines)

"""Build the trilingual lexicon from its sources, English as pivot.

Stages, in order (each one's survivor count goes into build_report.json):
  1. pivots        English words FreeDict translates into Spanish (either direction)
  2. common        pivots at least `en_min_zipf` common, not blocked by the overrides
  3. spanish       pivots left with a real, common Spanish word (merged entries and typos gone)
  4. chinese       pivots left with a common simplified CC-CEDICT word glossed exactly as the pivot
  5. similar       pivots with an (es, zh) pair whose three pairwise USE cosines all clear the bar
  6. one_to_one    each es and each zh text given to one pivot, best-scoring triples first
  7. final         capped at `target_size`, nouns before verbs, then ordered by English frequency
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hwkit.errors import UserError
from hwkit.files import read_yaml
from synth.fonts.charsets import gb2312_level1
from synth.lexicon import LANGS, Entry, Lexicon, LexiconError, parse_lexicon
from synth.lexicon.candidates import EN_WORD, ES_WORD, Candidate, chinese_candidates, spanish_candidates, zipf
from synth.lexicon.embed import Embedder, SimilarityTable
from synth.lexicon.overrides import Overrides
from synth.lexicon.sources import Sources

AUDIT_SEED = 1460  # the paper's ID count; any fixed value would do, this one is easy to remember


class BuildError(UserError, ValueError):
    """A build config or override the builder cannot follow."""


@dataclass
class BuildConfig:
    target_size: int = 2000  # IDs kept at most; the paper used 1,460, the headroom absorbs audit drops
    min_size: int = 1500  # fewer survivors than this is a failed build, not a small lexicon
    # Zipf = log10(occurrences per billion words). 2.5 is ~1 in 3 million: still everyday vocabulary
    # (ladder, spoon, giraffe); FreeDict itself is small, so the pivot list is what limits the size.
    en_min_zipf: float = 2.5
    # A FreeDict Spanish word unseen (or nearly) in wordfreq is a merged multi-word entry or a typo.
    es_min_zipf: float = 2.5
    zh_min_zipf: float = 2.5  # below this CC-CEDICT offers literary or specialist words
    zh_max_len: int = 4  # characters; longer CEDICT headwords are phrases
    zh_single_min_zipf: float = 4.0  # a one-character word must be this common as a word of its own
    zh_gb2312_level1: bool = True  # zh characters limited to the 3,755 common ones all our Chinese fonts cover
    max_sense: int = 2  # translations from a source entry's first 3 senses only; later ones are rare uses
    accent_ratio: float = 10.0  # offer the common accent spelling when it is this many times more frequent
    # USE-multilingual cosines of single words are noisy (屋顶 'roof' scores 0.59 against tejado), so the
    # bar is on the mean of the three pairs (en-es, en-zh, es-zh), with a lower floor for each pair.
    # Correct triples of concrete words mostly score 0.7-0.95; sense mismatches fall below ~0.6.
    min_mean_similarity: float = 0.65
    min_similarity: float = 0.5
    # Triple score = mean cosine + the weights below; they rank candidates, the bars above accept them.
    zipf_weight: float = 0.08  # per Zipf unit, mean of es and zh: picks 狗 over 犬 (cosines within 0.01)
    sense_penalty: float = 0.05  # per sense index of the es and zh candidate (later senses are rarer uses)
    primary_bonus: float = 0.03  # es listed in both FreeDict directions; zh glossed first in its entry
    specificity_weight: float = 0.03  # times 1/(senses of the zh entry): 黄油 (butter only) over 奶油 (cream)
    verb_penalty: float = 0.02  # the pair reads as a verb: nouns are less ambiguous across languages
    pos_agreement: bool = True  # es infinitive pairs only with a zh "to ..." gloss, and non-verbs with non-verbs
    # Only each pivot's best few triples compete in the one-to-one stage; a pivot pushed further down
    # its list by stronger claimants is dropped rather than given a weak translation.
    max_fallback: int = 3


@dataclass(frozen=True)
class Triple:
    en: str
    es: str
    zh: str
    score: float
    similarity: tuple[float, float, float]  # en-es, en-zh, es-zh
    en_zipf: float
    verb: bool
    forced: bool = False


@dataclass
class BuildResult:
    triples: list[Triple]
    stages: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _stage(stages: list[dict], name: str, count: int, note: str) -> None:
    stages.append({"stage": name, "count": count, "note": note})


def build_lexicon(sources: Sources, embedder: Embedder, config: BuildConfig, overrides: Overrides | None = None) -> BuildResult:
    """Run every stage on parsed sources and return the chosen triples, in semantic-ID order."""
    overrides = overrides or Overrides()
    stages: list[dict] = []
    freq = sources.frequencies

    pivots = {p for p in _all_pivots(sources) if EN_WORD.fullmatch(p)}
    _stage(stages, "pivots", len(pivots), "lowercase single English words in FreeDict eng-spa or spa-eng")
    common = {p for p in pivots if zipf(freq["en"], p) >= config.en_min_zipf and len(p) >= 2 and p not in overrides.drop_en}
    _stage(stages, "common", len(common), f"English Zipf >= {config.en_min_zipf}, not in overrides drop_en")

    es_cands = spanish_candidates(
        sources.eng_spa, sources.spa_eng, freq["es"], config.es_min_zipf, config.max_sense, config.accent_ratio
    )
    es_cands = _without(es_cands, common, overrides.block_es, overrides.reject, "es")
    _stage(stages, "spanish", len(es_cands), f"a Spanish word with Zipf >= {config.es_min_zipf} (accents repaired)")

    charset = gb2312_level1() if config.zh_gb2312_level1 else None
    zh_cands = chinese_candidates(
        sources.cedict, freq["zh"], set(es_cands), charset,
        config.zh_min_zipf, config.zh_max_len, config.max_sense, config.zh_single_min_zipf,
    )
    zh_cands = _without(zh_cands, set(es_cands), overrides.block_zh, overrides.reject, "zh")
    _stage(stages, "chinese", len(zh_cands), f"a CC-CEDICT simplified word, Zipf >= {config.zh_min_zipf}, glossed as the pivot")

    candidates = {p: (es_cands[p], zh_cands[p]) for p in sorted(zh_cands)}
    for pivot, force in sorted(overrides.force.items()):
        _check_forced(pivot, force, charset)
        es_list, zh_list = es_cands.get(pivot, []), zh_cands.get(pivot, [])
        if "es" in force:
            es_list = [Candidate(force["es"], 0, zipf(freq["es"], force["es"]), True)]
        if "zh" in force:
            zh_list = [Candidate(force["zh"], 0, zipf(freq["zh"], force["zh"]), True)]
        if es_list and zh_list:
            candidates[pivot] = (es_list, zh_list)

    texts = set(candidates) | {c.text for es, zh in candidates.values() for c in es + zh}
    sim = SimilarityTable(embedder, texts)
    scored = {p: _score(p, es, zh, sim, freq, config, p in overrides.force) for p, (es, zh) in sorted(candidates.items())}
    scored = {p: ts for p, ts in scored.items() if ts}
    note = f"mean USE cosine >= {config.min_mean_similarity}, each pair >= {config.min_similarity}, parts of speech agree"
    _stage(stages, "similar", len(scored), note + " (forced pivots exempt)")

    chosen = _one_to_one(scored, config.max_fallback)
    _stage(stages, "one_to_one", len(chosen), f"each es/zh text used once; a pivot may fall back to its top {config.max_fallback}")

    # Nouns before verbs when capping, then frequency: the cap drops rare verbs first.
    kept = sorted(chosen, key=lambda t: (not t.forced, t.verb, -t.en_zipf, t.en))[: config.target_size]
    final = sorted(kept, key=lambda t: (-t.en_zipf, t.en))
    _stage(stages, "final", len(final), f"at most {config.target_size}, ordered by English frequency")
    if len(final) < config.min_size:
        raise BuildError(f"lexicon build kept {len(final)} entries, fewer than min_size {config.min_size}; loosen the config")
    report = {
        "sources": dict(sources.versions),
        "similarity_model": getattr(embedder, "name", type(embedder).__name__),
        "config": asdict(config),
        "overrides": {**overrides.summary(), "forced_in_output": sum(t.forced for t in final)},
        "stages": stages,
    }
    return BuildResult(final, stages, report)


def _check_forced(pivot: str, force: dict[str, str], charset: frozenset[str] | None) -> None:
    """A forced text skips the filters, so it must at least obey the lexicon's own character rules."""
    if "es" in force and not ES_WORD.fullmatch(force["es"]):
        raise BuildError(f"overrides force.{pivot}: es {force['es']!r} is not one lowercase Spanish word")
    if "zh" in force:
        zh = force["zh"]
        if not all("\u4e00" <= ch <= "\u9fff" for ch in zh):
            raise BuildError(f"overrides force.{pivot}: zh {zh!r} is not all Chinese characters")
        if charset is not None and (outside := "".join(ch for ch in zh if ch not in charset)):
            raise BuildError(f"overrides force.{pivot}: zh {zh!r} has {outside} outside GB 2312 level 1")


def _without(cands: dict[str, list[Candidate]], pivots: set[str], blocked: frozenset[str], reject: dict, lang: str) -> dict[str, list[Candidate]]:
    """Candidates of `pivots` minus blocked texts and per-pivot rejections; pivots left empty go."""
    out = {}
    for pivot in sorted(pivots & set(cands)):
        rejected = reject.get(pivot, {}).get(lang, ())
        kept = [c for c in cands[pivot] if c.text not in blocked and c.text not in rejected]
        if kept:
            out[pivot] = kept
    return out


def _all_pivots(sources: Sources) -> set[str]:
    pivots = {e.headword for e in sources.eng_spa}
    pivots |= {t for e in sources.spa_eng for sense in e.senses for t in sense}
    return pivots


def _score(pivot, es_list, zh_list, sim, freq, config: BuildConfig, forced: bool) -> list[Triple]:
    """Every (es, zh) pair of a pivot that clears the similarity bar, best first."""
    triples = []
    en_zipf = zipf(freq["en"], pivot)
    for es in es_list:
        for zh in zh_list:
            # Part of speech must agree: respuesta (noun) and 答应 "to answer" are not one concept.
            verb = es.verb and zh.verb
            if config.pos_agreement and not (verb or (es.nonverb and zh.nonverb)) and not forced:
                continue
            sims = (sim(pivot, es.text), sim(pivot, zh.text), sim(es.text, zh.text))
            mean = sum(sims) / 3
            if (min(sims) < config.min_similarity or mean < config.min_mean_similarity) and not forced:
                continue
            score = (
                mean
                + config.zipf_weight * (es.zipf + zh.zipf) / 2
                - config.sense_penalty * (es.sense + zh.sense)
                + config.primary_bonus * (es.confirmed + zh.confirmed)
                + config.specificity_weight / max(zh.senses, 1)
                - config.verb_penalty * verb
            )
            triples.append(Triple(pivot, es.text, zh.text, round(score, 4), sims, en_zipf, verb, forced))
    return sorted(triples, key=lambda t: (-t.score, t.es, t.zh))


def _one_to_one(scored: dict[str, list[Triple]], max_fallback: int) -> list[Triple]:
    """Greedy assignment over all triples, best score first: each pivot, es and zh text used once."""
    pool = [t for triples in scored.values() for t in triples[:max_fallback]]
    pool += [t for triples in scored.values() for t in triples if t.forced]
    # Forced triples claim their texts before anything else; ties break on the texts themselves.
    pool.sort(key=lambda t: (not t.forced, -t.score, t.en, t.es, t.zh))
    used_en, used_es, used_zh, chosen = set(), set(), set(), []
    for t in pool:
        if t.en in used_en or t.es in used_es or t.zh in used_zh:
            continue
        used_en.add(t.en), used_es.add(t.es), used_zh.add(t.zh)
        chosen.append(t)
    return chosen


def render_lexicon(triples: list[Triple]) -> bytes:
    """The lexicon TSV bytes for triples in semantic-ID order (validated by the loader before returning)."""
    lines = ["\t".join(("semantic_id", *LANGS))]
    lines += [f"{i}\t{t.en}\t{t.es}\t{t.zh}" for i, t in enumerate(triples)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    parse_lexicon(data, "<built lexicon>")
    return data


def draw_audit_sample(lex: Lexicon, n: int = 100, seed: int = AUDIT_SEED) -> list[Entry]:
    """`n` entries drawn without replacement by `random.Random(seed)`, returned in semantic-ID order."""
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(len(lex)), min(n, len(lex))))
    return [lex.entries[i] for i in ids]


AUDIT_COLUMNS = ("semantic_id", *LANGS, "verdict", "reason")
VERDICTS = ("correct", "wrong")


def render_audit(entries: list[Entry], judgements: dict[int, tuple[str, str]] | None = None) -> bytes:
    """Audit TSV: one row per drawn entry, verdict and reason from `judgements` (blank if not given)."""
    judgements = judgements or {}
    lines = ["\t".join(AUDIT_COLUMNS)]
    for e in entries:
        verdict, reason = judgements.get(e.semantic_id, ("", ""))
        lines.append("\t".join((str(e.semantic_id), e.en, e.es, e.zh, verdict, reason)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def read_audit(path: Path) -> list[dict[str, str]]:
    """Rows of an audit TSV as dicts keyed by AUDIT_COLUMNS; a bad header or verdict raises LexiconError."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != AUDIT_COLUMNS:
        raise LexiconError(path, 1, f"bad audit header; expected {'<TAB>'.join(AUDIT_COLUMNS)}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields_ = line.split("\t")
        if len(fields_) != len(AUDIT_COLUMNS):
            raise LexiconError(path, lineno, f"expected {len(AUDIT_COLUMNS)} columns, found {len(fields_)}")
        row = dict(zip(AUDIT_COLUMNS, fields_))
        if row["verdict"] not in VERDICTS:
            raise LexiconError(path, lineno, f"verdict {row['verdict']!r} is not one of {', '.join(VERDICTS)}")
        rows.append(row)
    return rows


def build_report(result: BuildResult, lexicon_bytes: bytes) -> dict:
    """The build report: sources, config, overrides, stage counts and the output's size and hash."""
    output = {"entries": len(result.triples), "sha256": hashlib.sha256(lexicon_bytes).hexdigest()}
    return {**result.report, "output": output}


def load_config(path: Path | None) -> BuildConfig:
    """BuildConfig from a YAML mapping of field -> value (None: the defaults); unknown keys are errors."""
    if path is None:
        return BuildConfig()
    doc = read_yaml(path, BuildError, f"--config {path}")
    known = {f.name: f for f in fields(BuildConfig)}
    if not isinstance(doc, dict) or set(doc) - set(known):
        unknown = sorted(set(doc) - set(known)) if isinstance(doc, dict) else ["(not a mapping)"]
        raise BuildError(f"{path}: unknown build config key(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")
    return BuildConfig(**doc)

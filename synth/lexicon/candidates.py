"""Candidate translations of an English pivot word, drawn from parsed sources.

Spanish candidates come from FreeDict in both directions, Chinese ones from CC-CEDICT glosses. Each
candidate carries the evidence the builder scores it by (which sense it came from, how common it is);
the hard filters here remove what can never be a lexicon word: multi-word and merged entries, proper
nouns, characters outside the allowed set, words the frequency lists have never seen.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, replace

from synth.lexicon.sources import CedictEntry, DictEntry

EN_WORD = re.compile(r"[a-z]+")
ES_WORD = re.compile(r"[a-záéíóúüñ]+")
# Glosses prefixed this way name the same word as the bare form ("to eat" is the verb "eat").
_GLOSS_PREFIX = re.compile(r"^(?:to|a|an|the) ")
# CEDICT marks senses no modern mainland writer would pick first; such glosses never qualify.
_CEDICT_SKIP_SENSE = re.compile(
    r"^(?:(?:old |archaic |ancient |Japanese |Taiwan |)variant of|surname |CL:|abbr\. |see |used in |Kangxi radical|"
    r"\(old\)|\(archaic\)|\(literary\)|\(dialect\)|\(Tw\)|\(Cantonese\)|\(slang\)|\(Internet slang\)|\(classical\))"
)


def zipf(freq: dict[str, float], word: str) -> float:
    """wordfreq's Zipf scale: log10 of occurrences per billion words; 0 for unseen words."""
    f = freq.get(word, 0.0)
    return round(math.log10(f) + 9, 3) if f > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    """A translation of a pivot and the evidence for it."""

    text: str
    sense: int  # 0-based index of the earliest source sense that gives this translation
    zipf: float
    confirmed: bool = False  # es: listed in both FreeDict directions; zh: the pivot is the entry's first gloss
    senses: int = 1  # zh: how many senses the CEDICT entry has (fewer = less ambiguous)
    verb: bool = False  # can be read as a verb (zh: a "to ..." gloss; es: an infinitive)
    nonverb: bool = True  # can be read as a noun or adjective (zh: a gloss without "to")
    repaired_from: str = ""  # es: FreeDict spelling this accent-corrected form replaced


def strip_accents(word: str) -> str:
    """Drop acute accents and diaeresis but keep ñ, which is its own letter in Spanish."""
    out = []
    for ch in word:
        if ch in "ñÑ":
            out.append(ch)
        else:
            out.append("".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn"))
    return "".join(out)


def accent_index(es_freq: dict[str, float]) -> dict[str, str]:
    """Accent-free key -> the most frequent Spanish spelling with that key (ties: alphabetical)."""
    best: dict[str, tuple[float, str]] = {}
    for word, f in es_freq.items():
        if not ES_WORD.fullmatch(word):
            continue
        key = strip_accents(word)
        current = best.get(key)
        if current is None or f > current[0] or (f == current[0] and word < current[1]):
            best[key] = (f, word)
    return {key: word for key, (_, word) in best.items()}


def spanish_candidates(
    eng_spa: list[DictEntry],
    spa_eng: list[DictEntry],
    es_freq: dict[str, float],
    min_zipf: float,
    max_sense: int,
    accent_ratio: float,
) -> dict[str, list[Candidate]]:
    """Pivot -> Spanish candidates from both FreeDict directions, accent-repaired and frequency-filtered.

    A FreeDict translation absent from wordfreq's Spanish list is a merged multi-word entry
    ("contadorpúblico") or a typo, so it is dropped; a misplaced accent ("libréria") is repaired to the
    common spelling. When another accent spelling is `accent_ratio` times more common, it is offered as
    a second candidate and similarity decides (té 'tea' vs te 'you').
    """
    evidence: dict[str, dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    for entry in eng_spa:
        if EN_WORD.fullmatch(entry.headword):
            for i, sense in enumerate(entry.senses[: max_sense + 1]):
                for text in sense:
                    evidence[entry.headword][text].append((i, "eng-spa"))
    for entry in spa_eng:
        if not ES_WORD.fullmatch(entry.headword):
            continue
        for i, sense in enumerate(entry.senses[: max_sense + 1]):
            for text in sense:
                if EN_WORD.fullmatch(text):
                    evidence[text][entry.headword].append((i, "spa-eng"))

    accents = accent_index(es_freq)
    out: dict[str, list[Candidate]] = {}
    for pivot in sorted(evidence):
        found: dict[str, Candidate] = {}
        for text, marks in sorted(evidence[pivot].items()):
            if not ES_WORD.fullmatch(text) or len(text) < 2:
                continue
            sense = min(i for i, _ in marks)
            confirmed = len({d for _, d in marks}) == 2
            forms = []
            common = accents.get(strip_accents(text), text)
            if zipf(es_freq, text) >= min_zipf:
                forms.append((text, ""))
                if common != text and es_freq.get(common, 0) >= accent_ratio * es_freq[text]:
                    forms.append((common, text))
            elif common != text and zipf(es_freq, common) >= min_zipf:
                forms.append((common, text))
            for form, original in forms:
                verb = spanish_is_verb(form, es_freq)
                cand = Candidate(form, sense, zipf(es_freq, form), confirmed, verb=verb, nonverb=not verb, repaired_from=original)
                if form not in found or _better(cand, found[form]):
                    found[form] = cand
        if found:
            out[pivot] = sorted(found.values(), key=lambda c: c.text)
    return out


def _better(a: Candidate, b: Candidate) -> bool:
    return (a.sense, not a.confirmed, a.repaired_from) < (b.sense, not b.confirmed, b.repaired_from)


_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
# Register and region labels: a gloss carrying one names a word a mainland reader would not pick.
_MARKED = re.compile(
    r"\((?:old|archaic|literary|dialect|Tw|Taiwan|Cantonese|slang|Internet slang|classical|vulgar|derog\.|"
    r"euphemism|onom\.|abbr\.|bound form|Buddhism|Taoism|Chinese medicine|TCM)[^)]*\)"
)


def gloss_words(gloss: str, pivots: set[str]) -> list[tuple[str, bool, bool]]:
    """(pivot, is_verb, is_qualified) for each pivot a CEDICT gloss names.

    Exact matches: "dog", "to eat", "the moon", "actor or actress", "world (CL:...)" (notes in
    parentheses dropped). Qualified matches, which name a narrower use and rank lower: a gloss that
    opens with a note ("(of skills) lost"), a plural ("details"), or a two-word gloss whose head is the
    pivot ("cow's milk", "power switch"). Glosses labelled with a register or region ("(old)", "(Tw)",
    "(slang)") never match.
    """
    if _MARKED.search(gloss):
        return []
    opens_with_note = gloss.lstrip().startswith("(")
    parts = " ".join(_PARENS.sub(" ", gloss).split()).split(" or ")
    # "actor or actress" names an actor, but "life or death" names neither: alternatives rank lower.
    alternative = len(parts) > 1
    found = []
    for part in parts:
        verb = part.startswith("to ") or parts[0].startswith("to ")  # "to live or die"
        words = _GLOSS_PREFIX.sub("", part).split(" ")
        if len(words) == 1 and words[0] in pivots:
            found.append((words[0], verb, opens_with_note or alternative))
        elif len(words) == 1 and (singular := _singular(words[0])) in pivots:
            found.append((singular, verb, True))
        elif len(words) == 2 and words[1] in pivots and not verb and _is_modifier(words[0]):
            found.append((words[1], False, True))
    return found


# First words of two-word glosses that change what the head means: "not valid" is 无效 'invalid',
# "one third" is 三分之一, "several hundred" is 数百.
_NOT_MODIFIERS = frozenset(
    "not no non un anti ex half semi very too most more less all each every some any several many few "
    "one two three four five six seven eight nine ten first second third last next other same own".split()
)


def _is_modifier(word: str) -> bool:
    word = word.removesuffix("'s")
    return EN_WORD.fullmatch(word) is not None and word not in _NOT_MODIFIERS


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else ""


def _real_senses(entry: CedictEntry) -> int:
    """Senses that carry a meaning (classifier and pronunciation notes are not senses)."""
    return sum(1 for sense in entry.senses if not _CEDICT_SKIP_SENSE.match(sense[0]) and "pr." not in sense[0])


def chinese_candidates(
    cedict: list[CedictEntry],
    zh_freq: dict[str, float],
    pivots: set[str],
    allowed_chars: frozenset[str] | None,
    min_zipf: float,
    max_len: int,
    max_sense: int,
    single_min_zipf: float = 0.0,
) -> dict[str, list[Candidate]]:
    """Pivot -> Chinese candidates: simplified headwords whose CEDICT gloss is exactly the pivot.

    Proper nouns (capitalised pinyin), variant/surname/classifier senses, characters outside
    `allowed_chars` and words wordfreq has never seen in Chinese are excluded.
    """
    found: dict[str, dict[str, Candidate]] = defaultdict(dict)
    for entry in cedict:
        zh = entry.simplified
        if entry.is_proper_noun or len(zh) > max_len or not all("\u4e00" <= ch <= "\u9fff" for ch in zh):
            continue
        if allowed_chars is not None and not all(ch in allowed_chars for ch in zh):
            continue
        if not entry.senses or _CEDICT_SKIP_SENSE.match(entry.senses[0][0]):
            continue  # the whole entry is a variant spelling or a surname
        z = zipf(zh_freq, zh)
        # A lone character must be common on its own: 咖 or 啤 are halves of 咖啡, 啤酒.
        if z < min_zipf or (len(zh) == 1 and z < single_min_zipf):
            continue
        for i, sense in enumerate(entry.senses[: max_sense + 1]):
            for j, gloss in enumerate(sense):
                if _CEDICT_SKIP_SENSE.match(gloss):
                    continue
                for word, verb, qualified in gloss_words(gloss, pivots):
                    # A qualified gloss counts as one sense later: it names a narrower use.
                    cand = Candidate(
                        zh, i + qualified, z, confirmed=(i == 0 and j == 0 and not qualified),
                        senses=_real_senses(entry), verb=verb, nonverb=not verb,
                    )
                    old = found[word].get(zh)
                    if old is not None:
                        # CEDICT may give a word the pivot in several glosses or entries: keep the
                        # strongest evidence, and every part of speech seen.
                        best = min(cand, old, key=lambda c: (c.sense, not c.confirmed, c.senses))
                        cand = replace(best, verb=cand.verb or old.verb, nonverb=cand.nonverb or old.nonverb)
                    found[word][zh] = cand
    return {pivot: sorted(cands.values(), key=lambda c: c.text) for pivot, cands in sorted(found.items())}


def spanish_is_verb(word: str, es_freq: dict[str, float], min_zipf: float = 2.5) -> bool:
    """Whether a Spanish word is an infinitive: -ar/-er/-ir (+se) with a common participle or gerund.

    The inflection test keeps nouns that merely end like infinitives ("mar", "mujer", "hogar") out;
    the gerund covers irregular participles (cubrir: cubierto, but cubriendo).
    """
    stem = word[:-2] if word.endswith("se") else word
    if stem.endswith("ar"):
        forms = (stem[:-2] + "ado", stem[:-2] + "ando")
    elif stem.endswith(("er", "ir", "ír")):
        forms = (stem[:-2] + "ido", stem[:-2] + "iendo", stem[:-2] + "yendo")
    else:
        return False
    return any(zipf(es_freq, form) >= min_zipf for form in forms)

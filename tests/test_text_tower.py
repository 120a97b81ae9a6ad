"""Text tower on a tiny random BERT built and saved by the test, loaded back by path: no download."""

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from train.towers.text_tower import FrozenPrefixCache, TextTower, TextTowerConfig, mean_pool  # noqa: E402

HIDDEN, LAYERS = 32, 4
WORDS = ["water", "agua", "fire", "fuego", "query", ":"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A 4-layer, 32-wide random BERT and a WordPiece tokenizer saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    letters = "abcdefghijklmnopqrstuvwxyzñáéíóú"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # so train-mode passes are comparable
    )
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tower(path, **overrides) -> TextTower:
    torch.manual_seed(1)
    return TextTower(TextTowerConfig(model_path=str(path), **overrides))


def n_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_loads_by_path_and_outputs_unit_vectors(bert_dir):
    tower = make_tower(bert_dir).eval()
    with torch.no_grad():
        z = tower.encode(["water", "agua", "fuego", "water"])
    assert z.shape == (4, 128)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.equal(z[0], z[3])  # duplicates are encoded once and scattered back


def test_missing_or_bad_folder_gives_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="text encoder folder not found") as err:
        TextTower(TextTowerConfig(model_path=str(tmp_path / "nope")))
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        TextTower(TextTowerConfig(model_path=str(tmp_path / "empty")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot load a text encoder") as err:
        TextTower(TextTowerConfig(model_path=str(tmp_path / "broken")))
    assert "\n" not in str(err.value)


def test_mean_pooling_ignores_padding(bert_dir):
    tower = make_tower(bert_dir).eval()
    with torch.no_grad():
        alone = tower.encode(["agua"])
        padded = tower.encode(["agua", "fuego water fire agua query"])  # "agua" gets padded here
    assert torch.allclose(alone[0], padded[0], atol=1e-6)
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_prefix_changes_the_input(bert_dir):
    plain, e5 = make_tower(bert_dir).eval(), make_tower(bert_dir, prefix="query: ").eval()
    assert e5.tokenizer.decode(e5.tokenize(["agua"])["input_ids"][0]) != \
        plain.tokenizer.decode(plain.tokenize(["agua"])["input_ids"][0])
    with torch.no_grad():
        assert not torch.allclose(plain.encode(["agua"]), e5.encode(["agua"]))


def test_lock_counts_and_idempotence(bert_dir):
    tower = make_tower(bert_dir)
    layer = sum(p.numel() for p in tower.model.encoder.layer[0].parameters())
    projector = sum(p.numel() for p in tower.projector.parameters())
    assert projector == HIDDEN * 128 + 128
    tower.lock(0)
    assert n_trainable(tower) == projector
    for _ in range(2):
        tower.lock(1)
        assert n_trainable(tower) == projector + layer
        assert tower.model.encoder.layer[-1].attention.self.query.weight.requires_grad
        assert not tower.model.encoder.layer[-2].attention.self.query.weight.requires_grad
        assert not tower.model.embeddings.word_embeddings.weight.requires_grad
    tower.lock(3)
    tower.lock(2)
    assert n_trainable(tower) == projector + 2 * layer
    tower.lock(LAYERS + 5)  # all layers, embeddings still frozen
    assert n_trainable(tower) == projector + LAYERS * layer
    tower.lock(None)
    pooler = sum(p.numel() for p in tower.model.pooler.parameters())
    assert n_trainable(tower) == sum(p.numel() for p in tower.parameters()) - pooler


def _step(tower, texts):
    tower.zero_grad(set_to_none=True)
    z = tower.encode(texts)
    target = torch.linspace(-1, 1, z.numel()).reshape(z.shape)
    (z * target).sum().backward()
    return z.detach(), {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("unlocked", [0, 2, LAYERS])
def test_cached_and_uncached_forward_and_gradients_agree(bert_dir, unlocked):
    cached, uncached = make_tower(bert_dir), make_tower(bert_dir, cache_frozen=False)
    uncached.load_state_dict(cached.state_dict())
    for tower in (cached, uncached):
        tower.lock(unlocked)
        tower.train()
    texts = ["water", "agua", "fuego fire", "water", "query : agua", "ñú"]
    z_c, g_c = _step(cached, texts)
    z_u, g_u = _step(uncached, texts)
    assert len(cached.cache) == 5 and len(uncached.cache) == 0
    assert (z_c - z_u).abs().max().item() < 1e-5
    assert set(g_c) == set(g_u)
    assert any(n.startswith("projector") for n in g_c)
    top = [f"model.encoder.layer.{i}." for i in range(LAYERS - unlocked, LAYERS)]
    assert {n for n in g_c if n.startswith("model.")} == \
        {n for n, _ in cached.named_parameters() if n.startswith(tuple(top))}
    for name in g_c:
        assert (g_c[name] - g_u[name]).abs().max().item() < 1e-5, name
    # A second step reuses the cache: no new entries, same result.
    z_again, _ = _step(cached, texts)
    assert len(cached.cache) == 5 and torch.allclose(z_again, z_c, atol=1e-6)


def test_cache_is_cleared_when_the_frozen_depth_or_weights_change(bert_dir):
    tower = make_tower(bert_dir)
    tower.lock(1)
    tower.precompute(WORDS)
    assert len(tower.cache) == len(WORDS)
    tower.lock(1)
    assert len(tower.cache) == len(WORDS)  # same depth: entries still valid
    tower.lock(2)
    assert len(tower.cache) == 0
    tower.precompute(WORDS)
    tower.load_state_dict(tower.state_dict())
    assert len(tower.cache) == 0


def test_frozen_prefix_cache_pads_on_the_right():
    cache = FrozenPrefixCache()
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    cache.add(["long", "short"], hidden, torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert cache.missing(["short", "new", "new"]) == ["new"]
    states, mask = cache.batch(["short", "long"], torch.device("cpu"))
    assert states.shape == (2, 3, 2) and mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert torch.equal(states[0, 0], hidden[1, 0]) and torch.equal(states[0, 1:], torch.zeros(2, 2))


def test_falls_back_to_the_full_model_when_the_top_path_is_wrong(bert_dir):
    cached, uncached = make_tower(bert_dir), make_tower(bert_dir, cache_frozen=False)
    for tower in (cached, uncached):
        tower.lock(2)
    cached._attention_mask = lambda hidden, mask: None  # an architecture we drive wrongly: padding ignored
    texts = ["agua", "fuego water fire"]
    with pytest.warns(UserWarning, match="running the whole encoder"):
        z = cached.encode(texts)
    assert len(cached.cache) == 0
    assert torch.allclose(z, uncached.encode(texts), atol=1e-6)


def test_top_path_check_passes_under_bf16_autocast(bert_dir):
    """A training step runs under bf16 autocast (on CUDA); the one-off check must still accept the cache."""
    tower = make_tower(bert_dir)
    tower.lock(2)
    tower.train()
    texts = ["agua", "fuego water fire", "ñú"]
    tower.precompute(texts)  # as the trainer does: in fp32, before the first step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tower.encode(texts)
    assert tower._use_cache() and len(tower.cache) == 3


def test_unknown_architecture_locks_only_whole(bert_dir):
    tower, reference = make_tower(bert_dir).eval(), make_tower(bert_dir).eval()
    tower.layers = None  # as if the model had no layer list we recognise
    with pytest.raises(ValueError, match="needs a layer list"):
        tower.lock(1)
    tower.lock(0)
    assert n_trainable(tower) == sum(p.numel() for p in tower.projector.parameters())
    with torch.no_grad():
        z = tower.encode(["agua", "fuego water"])
        assert len(tower.cache) == 2  # the frozen encoder's output is cached as a whole
        assert torch.allclose(z, reference.encode(["agua", "fuego water"]), atol=1e-6)


def test_train_info_sizes_both_towers(bert_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from train.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["info", "--json", "--text-encoder", str(bert_dir), "--unlocked-layers", "1"])
    assert result.exit_code == 0, result.output
    sizes = json.loads(result.stdout)
    assert sizes["image_tower.total"] == 1_287_808 == sizes["image_tower.features"] + sizes["image_tower.projector"]
    assert sizes["text_tower.total"] == n_trainable(make_tower(bert_dir))  # everything trainable before lock()
    assert 0 < sizes["text_tower.trainable"] < sizes["text_tower.total"]
    table = runner.invoke(app, ["info"])
    assert table.exit_code == 0 and "1,287,808 parameters, 99.8% of the paper's 1.29 M" in table.output
    missing = runner.invoke(app, ["info", "--text-encoder", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "text encoder folder not found" in missing.output and "Traceback" not in missing.output

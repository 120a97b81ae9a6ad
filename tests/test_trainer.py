"""The training stage: schedule, parameter groups, checkpoints, resume equivalence, guards and errors."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synth.lexicon import load_lexicon
from tests.train_fixtures import make_tiny_bert, tiny_config, write_lexicon, write_shards
from train.config import ConfigError, load_config
from train.metrics import levenshtein
from train.objectives.gallery import TextGallery
from train.run import trainer
from train.run.checkpoint import CheckpointError, latest_checkpoint, model_weights, read_checkpoint
from train.run.trainer import TrainingError, lr_at, param_groups, train_stage


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    lexicon = load_lexicon(write_lexicon(root / "lexicon.tsv"))
    bert = make_tiny_bert(root / "bert", dropout=0.1)  # dropout on: resume must restore the torch RNG
    data = write_shards(root / "shards", per_id=2)
    return root, lexicon, bert, data


def test_presets_load_and_reject_typos():
    paper = load_config("paper", "finetune")
    assert paper.optim.lr == 1e-5 and paper.optim.epochs == 20 and paper.batch.batch_size == 1460
    assert load_config("paper", "pretrain").optim.lr == 1e-4
    small = load_config("cpu-small", "pretrain")
    assert small.model == load_config("cpu-small", "finetune").model  # the stages differ only in optim
    gpu = load_config("gpu", "pretrain")  # one recipe at two scales
    assert gpu.loss == small.loss and gpu.model.text == small.model.text and gpu.loss.objective == "prototype"
    assert gpu.model.image.crop and small.model.image.crop and gpu.model.image.image_width == 256
    with pytest.raises(ConfigError, match="unknown key 'lr_max'"):
        load_config("paper", "pretrain", {"optim.lr_max": 1.0})
    with pytest.raises(ConfigError, match="optim.epochs: expected an integer"):
        load_config("paper", "pretrain", {"optim.epochs": "many"})
    with pytest.raises(ConfigError, match="unknown preset 'gpu-huge'"):
        load_config("gpu-huge", "pretrain")
    with pytest.raises(ConfigError, match="every loss term is off"):
        load_config("paper", "pretrain", {"loss.use_v2t": False, "loss.use_t2v": False, "loss.use_inv": False})
    with pytest.raises(ConfigError, match="loss.galleries .L_v2g. is a term of the prototype objective"):
        load_config("paper", "pretrain", {"loss.galleries": 1.0})
    with pytest.raises(ConfigError, match="loss.lam, loss.align and loss.galleries must be ≥ 0"):
        load_config("cpu-small", "pretrain", {"loss.galleries": -1.0})


def test_lr_schedule_matches_its_formula():
    c = load_config("paper", "pretrain", {"optim.warmup": 0.1, "optim.min_lr_ratio": 0.1})
    total, peak = 100, c.optim.lr
    lrs = [lr_at(s, total, c) for s in range(total)]
    assert lrs[:10] == pytest.approx([peak * (s + 1) / 10 for s in range(10)])
    for s in range(10, total):  # cosine from the peak at step 10 towards 0.1·peak at step 100
        expected = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90)))
        assert lrs[s] == pytest.approx(expected)
    assert max(lrs) == pytest.approx(peak) and lrs[-1] > 0.1 * peak


def test_no_weight_decay_on_biases_norms_and_temperature(tiny):
    _, _, bert, _ = tiny
    from train.towers.model import DualEncoder

    config = tiny_config(bert)
    assert config.model.text.unlocked_layers > 0
    model = DualEncoder(config.model, bert)
    groups = param_groups(model, 0.05, encoder_lr_scale=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = [p for g in groups if g["weight_decay"] == 0.05 for p in g["params"]]
    no_decay = [p for g in groups if g["weight_decay"] == 0.0 for p in g["params"]]
    assert len(groups) == 4 and len(decay) + len(no_decay) == sum(len(g["params"]) for g in groups)
    assert all(p.ndim >= 2 for p in decay)
    assert "logit_scale.log_scale" in {names[id(p)] for p in no_decay}
    assert not any(".bias" in names[id(p)] for p in decay)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in decay + no_decay} == trainable
    # the unlocked pre-trained layers, and only they, take the encoder's share of the rate
    for g in groups:
        encoder = {names[id(p)].startswith("text.model.") for p in g["params"]}
        assert encoder == {g["lr_scale"] == 0.1}


def test_resume_reaches_the_uninterrupted_result(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    config = tiny_config(bert)
    whole = train_stage(config, [data], tmp_path / "whole", lexicon)
    assert whole.finished and whole.steps == 8  # 48 rows / 12 per batch × 2 epochs
    cut = train_stage(config, [data], tmp_path / "cut", lexicon, stop_at=3)  # mid-epoch
    assert not cut.finished and cut.steps == 3
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000003"
    resumed = train_stage(config, [data], tmp_path / "cut", lexicon, resume="latest")
    assert resumed.finished and resumed.steps == 8
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # metrics: one line per step, no duplicates from the abandoned continuation
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 9))
    assert (tmp_path / "cut" / "curves.png").stat().st_size > 1000


def test_checkpoint_holds_trainable_text_layers_not_the_frozen_encoder(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert, **{"optim.max_steps": 1}), [data], tmp_path / "run", lexicon)
    weights, _, state, rng = read_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state.step == 1 and "rng.torch" in rng
    assert any(k.startswith("text.model.encoder.layer.1.") for k in weights)  # the unlocked top layer
    assert not any(k.startswith("text.model.encoder.layer.0.") for k in weights)  # frozen: from the folder
    assert not any(k.startswith("text.model.embeddings.word_embeddings") for k in weights)
    assert any(k.startswith("image.features.") for k in weights) and "logit_scale.log_scale" in weights
    # frozen encoder weights did not move; the trained top layer did
    original = load_file(bert / "model.safetensors")
    from train.evaluate import load_model

    model, _, _ = load_model(tmp_path / "run")
    own = dict(model.text.model.named_parameters())
    assert torch.equal(own["encoder.layer.0.attention.self.query.weight"], original["encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(own["encoder.layer.1.attention.self.query.weight"], original["encoder.layer.1.attention.self.query.weight"])


def test_resume_with_another_config_says_what_changed(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon, stop_at=1)
    with pytest.raises(TrainingError, match=r"differs from the run's config.json in config\.optim\.lr"):
        train_stage(tiny_config(bert, **{"optim.lr": 1e-3}), [data], tmp_path / "run", lexicon, resume="latest")
    with pytest.raises(TrainingError, match="already exists and is not empty"):
        train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train_stage(tiny_config(bert), [data], tmp_path / "fresh", lexicon, resume="latest")


def test_resume_accepts_a_run_from_before_a_config_key_existed(tiny, tmp_path):
    """A key added to the config later (here loss.negatives) takes its default when an older run resumes."""
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon, stop_at=1)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    del stored["config"]["loss"]["negatives"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(stored))
    result = train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon, resume="latest", stop_at=2)
    assert result.steps == 2


def test_truncated_checkpoint_is_named(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon, stop_at=1)
    ckpt = latest_checkpoint(tmp_path / "run")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: checksum mismatch"):
        train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon, resume="latest")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        model_weights(ckpt)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    _, lexicon, bert, data = tiny
    real = trainer.RetrievalLoss.forward
    calls = {"n": 0}

    def poisoned(self, **kw):
        calls["n"] += 1
        out = real(self, **kw)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.RetrievalLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"diverged at step 3 .*last good checkpoint is .*step-00000002"):
        train_stage(tiny_config(bert, checkpoint_every=1), [data], tmp_path / "run", lexicon)
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_run_that_saved_no_checkpoint_restarts_with_resume_latest(tiny, tmp_path, monkeypatch):
    _, lexicon, bert, data = tiny
    with pytest.raises(ConfigError, match="optim.lr must be a finite number, got inf"):
        tiny_config(bert, **{"optim.lr": float("inf")})
    real = trainer.RetrievalLoss.forward
    monkeypatch.setattr(trainer.RetrievalLoss, "forward", lambda self, **kw: {
        k: v * float("nan") if k == "loss" else v for k, v in real(self, **kw).items()})
    with pytest.raises(TrainingError, match="no checkpoint was written yet, so `resume='latest'` starts the run again"):
        train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon)
    monkeypatch.setattr(trainer.RetrievalLoss, "forward", real)
    with pytest.raises(TrainingError, match="already exists and is not empty"):  # never silently over it
        train_stage(tiny_config(bert), [data], tmp_path / "run", lexicon)
    result = train_stage(tiny_config(bert, **{"optim.max_steps": 2}), [data], tmp_path / "run", lexicon, resume="latest")
    assert result.steps == 2 and (tmp_path / "run" / "model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps == sorted(steps)  # one log, the restart's


def test_finetune_refuses_an_init_with_another_model(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert, **{"optim.max_steps": 1}), [data], tmp_path / "pre", lexicon)
    other = load_config("paper", "finetune", {**{k: v for k, v in {
        "model.text.model_path": str(bert), "model.text.unlocked_layers": 1, "model.text.prefix": "",
        "model.image.image_height": 32, "model.image.image_width": 160, "batch.batch_size": 12,
        "data.workers": 0}.items()}})
    with pytest.raises(TrainingError, match=r"model differs from this config in model\.image\.image_width"):
        train_stage(other, [data], tmp_path / "fine", lexicon, init=tmp_path / "pre")
    same = load_config("paper", "finetune", {"model.text.model_path": str(bert), "model.text.unlocked_layers": 1,
                                             "model.text.prefix": "", "model.image.image_height": 32,
                                             "model.image.image_width": 128, "batch.batch_size": 12,
                                             "data.workers": 0, "optim.max_steps": 1, "precise_bn_batches": 0})
    result = train_stage(same, [data], tmp_path / "fine", lexicon, init=tmp_path / "pre")
    assert result.finished
    a = load_file(tmp_path / "pre" / "model.safetensors")
    b = load_file(tmp_path / "fine" / "model.safetensors")
    # one step at lr 1e-5 from the same start: close to the pre-trained weights, not to a fresh init
    key = "image.projector.2.weight"
    assert torch.allclose(a[key], b[key], atol=1e-3) and not torch.equal(a[key], b[key])


@pytest.mark.slow  # make test-fast leaves it out
def test_training_learns_the_fixture_task(tiny, tmp_path):
    """A short run separates the eight bar patterns: eval Acc@1 far above chance (1/8)."""
    _, lexicon, bert, _ = tiny
    data = write_shards(tmp_path / "more", per_id=6, seed=1)
    held = write_shards(tmp_path / "held", per_id=2, seed=9)
    config = tiny_config(bert, **{"optim.epochs": 12, "batch.batch_size": 24, "optim.lr": 3e-3, "precise_bn_batches": 6})
    train_stage(config, [data], tmp_path / "run", lexicon)
    from train.evaluate import evaluate, load_model

    model, _, _ = load_model(tmp_path / "run")
    report = evaluate(model, [held], lexicon, cross_lingual=True)
    assert report["within"]["all"]["acc@1"] >= 0.5, report["within"]
    assert set(report["cross"]) == {"en→zh", "zh→en", "zh→es", "es→zh", "es→en", "en→es", "mean"}
    assert report["gallery"]["size"] == 8 and report["n_images"] == 48


@pytest.mark.slow  # make test-fast leaves it out
def test_prototype_objective_learns_across_languages_and_logs_validation(tiny, tmp_path):
    """The prototype objective (texts of an ID drawn onto one prototype, with L_v2g) retrieves across
    languages; --val scores each epoch into metrics.jsonl and curves.png."""
    _, lexicon, bert, _ = tiny
    data = write_shards(tmp_path / "more", per_id=6, seed=1)
    held = write_shards(tmp_path / "held", per_id=2, seed=9)
    config = tiny_config(bert, **{"optim.epochs": 12, "batch.batch_size": 24, "optim.lr": 3e-3, "precise_bn_batches": 6,
                                  "loss.objective": "prototype", "loss.use_inv": False, "model.text.proj_hidden": 32,
                                  "loss.galleries": 1.0, "val_every": 4})
    epochs = []
    train_stage(config, [data], tmp_path / "run", lexicon, val=[held], on_epoch=epochs.append)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"v2p", "t2p", "v2g"} <= set(records[0]) and "itc" not in records[0]
    scored = [r for r in records if "val_acc1" in r]
    assert [r["epoch_done"] for r in scored] == [4, 8, 12] and scored == [r for r in epochs if "val_acc1" in r]
    assert {"val_acc1_en", "val_acc1_es", "val_acc1_zh", "val_cross_acc1"} <= set(scored[-1])
    assert scored[-1]["val_acc1"] >= 0.5 and (tmp_path / "run" / "curves.png").is_file()
    from train.evaluate import evaluate, load_model

    report = evaluate(load_model(tmp_path / "run")[0], [held], lexicon, cross_lingual=True)
    assert report["within"]["all"]["acc@1"] >= 0.5 and report["cross"]["mean"]["acc@1"] >= 0.5, report
    assert report["within"]["all"]["acc@1"] == pytest.approx(scored[-1]["val_acc1"], abs=0.2)


def test_validation_leaves_training_unchanged(tiny, tmp_path):
    """Scoring --val at every epoch (its BN re-estimate on a copy, its text passes) changes no weight."""
    _, lexicon, bert, data = tiny
    held = write_shards(tmp_path / "held", per_id=1, seed=9)
    config = tiny_config(bert, **{"loss.objective": "prototype"})
    train_stage(config, [data], tmp_path / "plain", lexicon)
    train_stage(config, [data], tmp_path / "scored", lexicon, val=[held])
    plain, scored = (load_file(tmp_path / run / "model.safetensors") for run in ("plain", "scored"))
    assert plain.keys() == scored.keys() and all(torch.equal(plain[k], scored[k]) for k in plain)


def test_text_gallery_positives_by_brute_force():
    """Columns are the distinct (ID, text) pairs; a homograph ("sol" for IDs 1 and 3) is a column of each."""
    texts = np.array(["sun", "sol", "太阳", "sol", "floor", "sun", "sol"], dtype=object)
    ids = np.array([1, 1, 1, 3, 3, 1, 3])
    langs = np.array(["en", "es", "zh", "es", "en", "en", "en"])  # ID 3's "sol" is English and Spanish
    gallery = TextGallery(texts, ids, langs)
    pairs = sorted(set(zip(ids.tolist(), texts.tolist())))
    assert list(zip(gallery.ids.tolist(), gallery.texts)) == pairs
    assert [(gallery.ids[k], gallery.texts[k]) for k in gallery.index] == list(zip(ids, texts))
    rows = np.array([0, 3, 4, 2])
    for label_aware in (False, True):
        mask = gallery.positives(rows, label_aware)
        for i, r in enumerate(rows):
            for k, (y, text) in enumerate(pairs):
                assert mask[i, k] == ((y, text) == (ids[r], texts[r]) or (label_aware and y == ids[r]))
    assert gallery.languages == ["en", "es", "zh"]
    for k, (y, text) in enumerate(pairs):  # a column is in a language when a row of that language uses it
        assert gallery.language_mask[:, k].tolist() == [
            any((ids[r], texts[r], langs[r]) == (y, text, lang) for r in range(len(ids))) for lang in gallery.languages]


@pytest.mark.slow  # make test-fast leaves it out
def test_lexicon_negatives_learn_the_fixture_task(tiny, tmp_path):
    """loss.negatives=lexicon (L_v2t over all 24 texts) trains end to end, with label-aware positives too."""
    _, lexicon, bert, _ = tiny
    data = write_shards(tmp_path / "more", per_id=6, seed=1)
    held = write_shards(tmp_path / "held", per_id=2, seed=9)
    config = tiny_config(bert, **{"optim.epochs": 12, "batch.batch_size": 24, "optim.lr": 3e-3,
                                  "precise_bn_batches": 6, "loss.negatives": "lexicon", "loss.label_aware": True})
    train_stage(config, [data], tmp_path / "run", lexicon)
    from train.evaluate import evaluate, load_model

    report = evaluate(load_model(tmp_path / "run")[0], [held], lexicon)
    assert report["within"]["all"]["acc@1"] >= 0.5, report["within"]


def test_evaluate_matches_a_brute_force_ranking(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert, **{"optim.max_steps": 2}), [data], tmp_path / "run", lexicon)
    from train.evaluate import embed_images, embed_texts, evaluate, load_model

    model, _, _ = load_model(tmp_path / "run")
    report = evaluate(model, [data], lexicon, cross_lingual=True)
    images = embed_images(model, [data])
    ids = np.unique(images["semantic_ids"])
    for query, gallery in (("es", "es"), ("en", "zh")):
        texts = embed_texts(model, [lexicon.entries[i].text(gallery) for i in ids])
        hits, rr, nes = [], [], []
        for e, sid, lang in zip(images["embeds"], images["semantic_ids"], images["langs"]):
            if lang != query:
                continue
            scores = texts @ e
            correct = scores[list(ids).index(sid)]
            rank = 1 + sum(1 for j, s in enumerate(scores) if ids[j] != sid and s >= correct)
            hits.append(rank == 1)
            rr.append(1 / rank)
            top = lexicon.entries[ids[int(np.argmax(scores))]].text(gallery).lower()
            truth = lexicon.entries[sid].text(gallery)
            nes.append(1 - levenshtein(top, truth) / max(len(top), len(truth)))
        got = report["within"][query] if query == gallery else report["cross"][f"{query}→{gallery}"]
        assert got["acc@1"] == pytest.approx(np.mean(hits)) and got["mrr"] == pytest.approx(np.mean(rr))
        assert got["nes"] == pytest.approx(np.mean(nes))


def test_embedding_batch_size_follows_the_device_and_changes_nothing(tiny, tmp_path):
    _, lexicon, bert, data = tiny
    train_stage(tiny_config(bert, **{"optim.max_steps": 1}), [data], tmp_path / "run", lexicon)
    from train.evaluate import default_batch_size, embed_images, load_model

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [default_batch_size(cpu, 64, 256), default_batch_size(cpu, 32, 128), default_batch_size(cuda, 64, 256)] == [32, 128, 256]
    assert default_batch_size(cpu, 2048, 2048) == 1
    model, _, _ = load_model(tmp_path / "run")
    whole, small = embed_images(model, [data]), embed_images(model, [data], batch_size=5)
    assert len(whole["embeds"]) > 5 and list(small["rows"]) == list(whole["rows"])
    assert np.allclose(small["embeds"], whole["embeds"], atol=1e-5)

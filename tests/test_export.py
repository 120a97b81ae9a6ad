"""`train export` and the torch-free `train search --onnx`: ONNX fp32 against PyTorch per image, int8 runs
and stays close, the gallery is the model's, and the device path never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from synth.lexicon import load_lexicon
from tests.train_fixtures import LEXICON, make_tiny_bert, tiny_config, write_lexicon, write_shards
from train.cli import app
from train.edge.export import ExportError, leading_stages, sample_images
from train.evaluate import embed_texts, load_model
from train.run.trainer import train_stage

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    lexicon_path = write_lexicon(root / "lexicon.tsv")
    bert = make_tiny_bert(root / "bert")
    data = write_shards(root / "shards", per_id=2)
    train_stage(tiny_config(bert, **{"optim.max_steps": 3}), [data], root / "run", load_lexicon(lexicon_path))
    result = runner.invoke(app, ["export", "--ckpt", str(root / "run"), "--out", str(root / "edge"), "--int8",
                                 "--calibration", str(data), "--calibration-images", "32", "--calibration-method", "percentile",
                                 "--lexicon", str(lexicon_path)])
    assert result.exit_code == 0, result.output
    return root, lexicon_path, data


def test_onnx_matches_pytorch_and_int8_stays_close(exported):
    root, lexicon_path, data = exported
    from train.edge import EdgeModel

    manifest = json.loads((root / "edge" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"image_tower.onnx", "image_tower.int8.onnx", "gallery.npy", "gallery.tsv"}
    assert manifest["parity"]["min_cosine"] >= 0.999 and manifest["int8"]["calibration_images"] == 32
    assert manifest["int8"]["calibration"] == "percentile" and manifest["int8"]["weights"].startswith("uint8")
    # uint8 weights: the fused kernels compute what the QDQ graph says on every CPU (no u8×s8 saturation)
    fidelity = manifest["int8"]["fidelity"]
    assert fidelity["images"] == manifest["parity"]["images"] and fidelity["cosine_kernels_to_graph"]["mean"] >= 0.995
    assert 0.5 <= fidelity["cosine_to_fp32"]["least"] <= fidelity["cosine_to_fp32"]["mean"] <= 1.0
    model, _, _ = load_model(root / "run")
    images = sample_images([data], 48, 32, 128, seed=5)
    with torch.no_grad():
        reference = model.image(torch.from_numpy(images)).numpy()
    fp32 = EdgeModel(root / "edge").embed(images)  # 48 images: a batch of 32, then 16
    assert (fp32 * reference).sum(axis=1).min() >= 0.999  # every image, not on average
    assert np.allclose(EdgeModel(root / "edge").embed(images, batch=48), fp32, atol=1e-6)  # batching changes nothing
    int8 = EdgeModel(root / "edge", int8=True).embed(images)
    assert int8.shape == fp32.shape and (int8 * fp32).sum(axis=1).mean() >= 0.9
    # the gallery is the model's own text embeddings, keyed en, es, zh in lexicon order
    keys = (root / "edge" / "gallery.tsv").read_text().splitlines()[1:]
    assert keys[0] == "0\ten\twater" and keys[8] == "0\tes\tagua" and keys[16] == "0\tzh\t水"
    texts = [row[k] for k in range(3) for row in LEXICON]
    assert np.allclose(np.load(root / "edge" / "gallery.npy"), embed_texts(model, texts), atol=1e-6)
    # evaluating the export gives `train eval`'s numbers (the int8 cost is measured this way)
    from train.edge import evaluate_export
    from train.evaluate import evaluate

    expected = evaluate(model, [data], load_lexicon(lexicon_path), cross_lingual=False)["within"]
    got = evaluate_export(EdgeModel(root / "edge"), [data])
    for lang in ("en", "es", "zh"):
        assert got[lang]["n_queries"] == expected[lang]["n_queries"] == 16
        assert got[lang]["mrr"] == pytest.approx(expected[lang]["mrr"], abs=0.02)


def test_onnx_search_matches_pytorch_search_without_importing_torch(exported, tmp_path):
    root, lexicon_path, data = exported
    shard = min((data / "data").glob("*.parquet"))
    png = tmp_path / "word.png"
    png.write_bytes(pq.read_table(shard).slice(3, 1).to_pylist()[0]["image"]["bytes"])
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from train.cli import app\n"
        f"r = CliRunner().invoke(app, ['search', '--onnx', {str(root / 'edge')!r}, '--image', {str(png)!r}, '-k', '24', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps({'hits': json.loads(r.output), 'torch': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["torch"] is False  # the device path: onnxruntime, NumPy and OpenCV only
    result = runner.invoke(app, ["search", "--ckpt", str(root / "run"), "--image", str(png), "-k", "24", "--json",
                                 "--lexicon", str(lexicon_path)])
    expected = json.loads(result.output)
    assert [(h["lang"], h["semantic_id"]) for h in got["hits"]] == [(h["lang"], h["semantic_id"]) for h in expected]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h["score"] for h in expected], abs=1e-4)


def test_export_refusals(exported, tmp_path):
    root, lexicon_path, data = exported
    args = ["export", "--ckpt", str(root / "run"), "--lexicon", str(lexicon_path)]
    result = runner.invoke(app, [*args, "--out", str(root / "edge")])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(app, ["export", "--ckpt", str(tmp_path / "no-run"), "--out", str(root / "edge")])
    assert result.exit_code == 1 and "already exists" in result.output  # refused before any model is looked for
    mine = tmp_path / "mine-edge"
    mine.mkdir()
    for name in ("manifest.json", "gallery.tsv"):
        (mine / name).write_bytes((root / "edge" / name).read_bytes())
    (mine / "sub").mkdir()
    (mine / "sub" / "plot.png").write_bytes(b"mine")
    result = runner.invoke(app, [*args, "--out", str(mine), "--overwrite"])
    assert result.exit_code == 1 and "did not write (sub/plot.png)" in result.output
    assert (mine / "sub" / "plot.png").read_bytes() == b"mine"
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e"), "--int8"])
    assert result.exit_code == 1 and "int8 needs calibration images" in result.output
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e"), "--int8", "--calibration", str(data),
                                 "--calibration-method", "median"])
    assert result.exit_code == 1 and "unknown --calibration-method 'median'" in result.output
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e"), "--int8", "--calibration", str(data),
                                 "--int8-weights", "int4"])
    assert result.exit_code == 1 and "unknown --int8-weights 'int4'" in result.output
    assert not (tmp_path / "e").exists()
    (root / "edge-broken").mkdir()
    for name in ("manifest.json", "image_tower.onnx", "gallery.npy", "gallery.tsv"):
        (root / "edge-broken" / name).write_bytes((root / "edge" / name).read_bytes())
    (root / "edge-broken" / "gallery.npy").write_bytes(b"changed")
    (tmp_path / "x.png").write_bytes(b"any")
    result = runner.invoke(app, ["search", "--onnx", str(root / "edge-broken"), "--image", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "changed since export" in result.output
    result = runner.invoke(app, ["search", "--onnx", str(root / "edge"), "--ckpt", str(root / "run"), "--image", "x.png"])
    assert result.exit_code == 1 and "exactly one of --ckpt" in result.output


def test_inlined_hardswish_nodes_are_named_so_int8_can_leave_them_out(exported, tmp_path):
    """onnxruntime's pre-processing inlines HardSwish as HardSigmoid and Mul with no names, which
    `nodes_to_exclude` cannot reach; prepare_graph names them, so they can stay in fp32."""
    import onnx

    from train.edge.export import FP32, prepare_graph, quantize_int8

    root, _, data = exported
    fp32 = root / "edge" / FP32
    nodes = prepare_graph(fp32, tmp_path / "prepared.onnx")
    names = [n.name for n in nodes]
    assert all(names) and len(set(names)) == len(names)
    gate = next(n for n in nodes if n.op_type == "HardSigmoid")  # the stem's hard-swish: x · HardSigmoid(x)
    calibration = sample_images([data], 16, 32, 128)

    def quantized(excluded: list[str]) -> bool:  # is the gate's output quantised in the int8 graph?
        quantize_int8(fp32, tmp_path / "int8.onnx", calibration, nodes_to_exclude=excluded)
        graph = onnx.load(tmp_path / "int8.onnx").graph
        return any(n.op_type == "QuantizeLinear" and gate.output[0] in n.input for n in graph.node)

    assert quantized([])
    consumers = [n.name for n in nodes if gate.output[0] in n.input]
    assert not quantized([gate.name, *consumers])


@pytest.mark.parametrize("weights", ["uint8", "int8"])
def test_int8_weight_types(exported, tmp_path, weights):
    """--int8-weights picks the stored weight type; the QDQ graph's own arithmetic (graph optimisations off)
    stays close to fp32 either way, and with uint8 weights the fused kernels reproduce it image by image."""
    import onnx
    from onnx import numpy_helper

    from train.edge import onnx_session
    from train.edge.export import FP32, int8_fidelity, onnx_embed, quantize_int8

    root, _, data = exported
    int8 = tmp_path / "int8.onnx"
    record = quantize_int8(root / "edge" / FP32, int8, sample_images([data], 16, 32, 128), weights=weights)
    assert record["weights"].startswith(weights)
    stored = {numpy_helper.to_array(t).dtype for t in onnx.load(int8).graph.initializer if t.name.endswith("weight_quantized")}
    assert stored == {np.dtype(weights)}
    images = sample_images([data], 32, 32, 128, seed=9)
    graph = onnx_session(int8, optimize=False).run(["embeddings"], {"images": images})[0]
    assert (graph * onnx_embed(root / "edge" / FP32, images)).sum(axis=1).mean() >= 0.95
    if weights == "uint8":  # int8 weights saturate on x86 without VNNI (mean 0.90 on this tiny run), not elsewhere
        assert int8_fidelity(root / "edge" / FP32, int8, images)["cosine_kernels_to_graph"]["mean"] >= 0.995


def test_fidelity_warning_names_the_fix():
    from train.edge.export import fidelity_warning

    def fidelity(mean: float) -> dict:
        return {"cosine_kernels_to_graph": {"mean": mean, "least": mean}}

    assert fidelity_warning(fidelity(0.9999), "int8") is None
    assert "--int8-weights uint8" in fidelity_warning(fidelity(0.98), "int8")
    assert "fp32 graph" in fidelity_warning(fidelity(0.98), "uint8")


@pytest.mark.parametrize("weights", ["uint8", "int8"])
def test_qdq_graph_computes_what_onnxruntime_computes(exported, tmp_path, weights):
    """train.edge.qat.QDQGraph runs the int8 graph in PyTorch: with the stored integer weights it matches
    onnxruntime running the graph node by node; with its float weights quantised on the fly (what
    distillation trains), it matches again, and with uint8 weights also onnxruntime's fused kernels."""
    from train.edge import onnx_session
    from train.edge.export import FP32, prepare_graph, quantize_int8
    from train.edge.qat import QDQGraph

    root, _, data = exported
    int8, prepared = tmp_path / "int8.onnx", tmp_path / "prepared.onnx"
    quantize_int8(root / "edge" / FP32, int8, sample_images([data], 32, 32, 128), weights=weights)
    prepare_graph(root / "edge" / FP32, prepared)
    graph = QDQGraph(int8, prepared)
    images = sample_images([data], 32, 32, 128, seed=9)
    graph_order = onnx_session(int8, optimize=False).run(["embeddings"], {"images": images})[0]
    with torch.no_grad():
        graph.exact_weights = True
        exact = graph(torch.from_numpy(images)).numpy()
        graph.exact_weights = False
        tuned_form = graph(torch.from_numpy(images)).numpy()
    def agree(a: np.ndarray, b: np.ndarray) -> bool:
        # most images match to float precision; on this tiny net a rounding tie decided the other way moves
        # its coarse embedding by whole levels, so a few images may differ more (0.994 seen)
        cosine = (a * b).sum(axis=1)
        return np.median(cosine) >= 0.99999 and cosine.mean() >= 0.99

    assert agree(exact, graph_order) and agree(tuned_form, exact)
    if weights == "uint8":
        assert agree(tuned_form, onnx_session(int8).run(["embeddings"], {"images": images})[0])


@pytest.mark.slow  # make test-fast leaves it out
def test_distillation_trains_the_int8_graph(exported, tmp_path):
    from train.edge import onnx_session
    from train.edge.export import FP32, prepare_graph, quantize_int8
    from train.edge.qat import DistilConfig, QDQGraph, distil, write_tuned

    root, _, data = exported
    fp32, int8, prepared = root / "edge" / FP32, tmp_path / "int8.onnx", tmp_path / "prepared.onnx"
    images = sample_images([data], 32, 32, 128)
    quantize_int8(fp32, int8, images)
    prepare_graph(fp32, prepared)
    graph = QDQGraph(int8, prepared)
    before = graph.weights()
    teacher = onnx_session(fp32)
    record = distil(graph, lambda x: teacher.run(["embeddings"], {"images": x})[0], np.load(root / "edge" / "gallery.npy"),
                    images, DistilConfig(steps=40, lr=1e-3, batch=32))
    assert record["steps"] == 40 and record["loss_last"] < record["loss_first"]
    after = graph.weights()
    assert set(after) == set(before) and any(not np.array_equal(after[k], before[k]) for k in before)
    write_tuned(prepared, after, tmp_path / "tuned.onnx")  # the tuned fp32 graph runs and carries the new weights
    tuned = onnx_session(tmp_path / "tuned.onnx").run(["embeddings"], {"images": images})[0]
    assert tuned.shape == (32, 128) and np.allclose(np.linalg.norm(tuned, axis=1), 1, atol=1e-4)


def test_quantize_command_adds_int8_to_an_export(exported, tmp_path):
    import shutil

    from train.edge import EdgeModel
    from train.edge.export import activation_scales

    root, _, data = exported
    folder = tmp_path / "edge"
    shutil.copytree(root / "edge", folder)
    before = json.loads((folder / "manifest.json").read_text())
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data)])
    assert result.exit_code == 1 and "already has an int8 graph; pass --overwrite" in result.output
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data), "--overwrite",
                                 "--calibration-images", "16"])
    assert result.exit_code == 0, result.output
    calibrated = activation_scales(folder / "image_tower.int8.onnx")
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data), "--overwrite",
                                 "--calibration-images", "16", "--distil-steps", "4"])
    assert result.exit_code == 0, result.output
    # the distilled weights are quantised at the activation scales they were tuned for
    kept = activation_scales(folder / "image_tower.int8.onnx")
    assert kept.keys() == calibrated.keys()
    assert all(np.array_equal(kept[k][0]["scale"], calibrated[k][0]["scale"]) for k in kept)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["int8"]["distillation"]["steps"] == 4 and manifest["int8"]["calibration_images"] == 16
    assert manifest["files"]["image_tower.onnx"] == before["files"]["image_tower.onnx"]
    assert manifest["files"]["image_tower.int8.onnx"] != before["files"]["image_tower.int8.onnx"]
    assert EdgeModel(folder, int8=True).embed(sample_images([data], 4, 32, 128)).shape == (4, 128)
    assert sorted(p.name for p in folder.iterdir()) == sorted(before["files"]) + ["manifest.json"]  # no temporaries
    (folder / "gallery.npy").write_bytes(b"changed")
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data), "--overwrite"])
    assert result.exit_code == 1 and "changed since export" in result.output
    result = runner.invoke(app, ["quantize", "--export", str(tmp_path / "none"), "--calibration", str(data)])
    assert result.exit_code == 1 and "no readable manifest.json" in result.output


def test_int8_fp32_stages_keep_the_first_stages_in_fp32(exported, tmp_path):
    """--int8-fp32-stages N leaves the tower's first N stages unquantised (distilled or not): their
    convolutions read float weights and float inputs, every later one dequantised integers. The manifest
    records N; more stages than the tower has is refused, leaving the export as it was."""
    import re
    import shutil

    import onnx

    root, lexicon_path, data = exported
    folder = tmp_path / "edge"
    shutil.copytree(root / "edge", folder)
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data), "--overwrite",
                                 "--calibration-images", "16", "--int8-fp32-stages", "2", "--distil-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "first 2 stages in fp32" in result.output
    record = json.loads((folder / "manifest.json").read_text())["int8"]
    assert record["fp32_stages"] == 2 and record["distillation"]["steps"] == 2
    graph = onnx.load(folder / "image_tower.int8.onnx").graph
    dequantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    stages = {}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        stage = int(re.match(r"/features/features\.(\d+)/", conv.name).group(1))
        stages.setdefault(stage, set()).add((conv.input[0] in dequantised, conv.input[1] in dequantised))
    assert stages[0] == stages[1] == {(False, False)}
    assert len(stages) == 13 and all(stages[s] == {(True, True)} for s in range(2, 13))

    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = runner.invoke(app, ["quantize", "--export", str(folder), "--calibration", str(data), "--overwrite",
                                 "--calibration-images", "16", "--int8-fp32-stages", "13"])
    assert result.exit_code == 1 and "has 13 stages, so at most 12" in result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(ExportError, match="has 13 stages, so at most 12"):  # the graph's own count agrees
        leading_stages(graph.node, 13)
    result = runner.invoke(app, ["export", "--ckpt", str(root / "run"), "--out", str(tmp_path / "early"), "--int8",
                                 "--calibration", str(data), "--int8-fp32-stages", "13", "--lexicon", str(lexicon_path)])
    assert result.exit_code == 1 and "at most 12" in result.output and not (tmp_path / "early").exists()

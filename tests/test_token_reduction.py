"""Fewer image tokens: the exported graph scores tokens as the torch model does, both backends keep the
same ones, answers read only those, and bad counts are one clear error."""

import json

import numpy as np
import pytest
import torch

from edgelmm.errors import UserError
from edgelmm.modeling import build_model
from edgelmm.runtime.token_reduction import reduce_tokens, select


def test_the_most_important_tokens_are_kept_in_their_order():
    embeds = np.arange(12, dtype=np.float32).reshape(6, 2)
    importance = np.array([0.1, 0.5, 0.05, 0.3, 0.3, 0.0])
    assert select(importance, 3).tolist() == [1, 3, 4]  # a tie goes to the earlier token
    assert reduce_tokens(embeds, importance, 3).tolist() == embeds[[1, 3, 4]].tolist()
    assert reduce_tokens(embeds, importance, 6) is embeds


def test_merged_tokens_average_the_tokens_left_out():
    rng = np.random.default_rng(0)
    kept = rng.normal(size=(4, 3))
    group_a = np.array([5.0, 0, 0]) + 0.1 * rng.normal(size=(5, 3))  # two clear groups among the rest
    group_b = np.array([0, 5.0, 0]) + 0.1 * rng.normal(size=(7, 3))
    embeds = np.concatenate([kept, group_a, group_b]).astype(np.float32)
    importance = np.r_[np.ones(4), np.zeros(12)]
    out = reduce_tokens(embeds, importance, 6, merge=2)
    assert np.allclose(out[:4], kept, atol=1e-6)  # the important ones, then one token per group
    assert np.allclose(out[4], group_a.mean(axis=0), atol=1e-5) and np.allclose(out[5], group_b.mean(axis=0), atol=1e-5)
    twins = reduce_tokens(np.ones((8, 3), np.float32), np.arange(8.0), 4, merge=3)  # identical tokens: no empty group
    assert twins.shape == (4, 3) and np.isfinite(twins).all()


@pytest.mark.parametrize("keep, merge, message", [(0, 0, "from 1 to 16"), (17, 0, "from 1 to 16"),
                                                  (4, 4, "from 0 to 3"), (4, -1, "from 0 to 3"),
                                                  ("8", 0, "whole number")])
def test_bad_counts_are_one_clear_error(keep, merge, message):
    with pytest.raises(UserError, match=message):
        reduce_tokens(np.zeros((16, 2), np.float32), np.zeros(16), keep, merge)


@pytest.fixture(scope="module")
def siglip_parts(tmp_path_factory):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(folder)
    return build_model(vision=str(folder), llm="tiny")


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_the_onnx_graph_scores_tokens_as_torch_does(tower, tiny, siglip_parts, tmp_path):
    import onnxruntime as ort

    from edgelmm.export.onnx_vision import export_vision_onnx
    from edgelmm.modeling.vision_encoder import VisionEncoder

    parts = tiny if tower == "clip" else siglip_parts
    path = export_vision_onnx(parts.model, tmp_path / "vision.onnx", 32, importance=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["image_embeds", "image_importance"]
    x = torch.randn(2, 3, 32, 32)
    embeds, scores = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        ref_embeds, ref_scores = VisionEncoder(parts.model, importance=True).eval()(x)
        plain = VisionEncoder(parts.model).eval()(x)
    assert scores.shape == (2, 16) and np.abs(scores - ref_scores.numpy()).max() <= 1e-5
    assert np.abs(embeds - ref_embeds.numpy()).max() <= 1e-4 and torch.allclose(ref_embeds, plain, atol=1e-5)
    if tower == "clip":  # what CLS attends to, over the patches: less than all of its attention
        assert (scores.sum(axis=1) < 1).all() and (scores > 0).all()


def test_both_backends_keep_the_same_tokens_and_answer_from_them(checkpoint, tmp_path, scenes_dir):
    import edgelmm
    from edgelmm.export.bundle import export_bundle
    from edgelmm.imaging import preprocess

    bundle = export_bundle(checkpoint, tmp_path / "b", quant="f32")
    fast, reference = edgelmm.load(bundle, n_threads=1), edgelmm.load(bundle, backend="torch", n_threads=1)
    image = scenes_dir / "images" / "es0_000004.png"
    pixels = preprocess(image, fast.backend.image_spec)
    (_, a), (_, b) = fast.backend.encode_image(pixels), reference.backend.encode_image(pixels)
    assert np.abs(a - b).max() <= 1e-5
    for keep in (12, 8, 4):
        assert select(a, keep).tolist() == select(b, keep).tolist()
        result = fast.answer(image, "How many objects are there?", max_tokens=6, image_tokens=keep)
        assert result.timings.image_tokens == keep
        assert result.text == reference.ask(image, "How many objects are there?", max_tokens=6, image_tokens=keep)
    merged = fast.answer(image, "Describe the image.", max_tokens=4, image_tokens=8, merge=2)
    assert merged.timings.image_tokens == 8
    # A model-wide default, overridden per question.
    fewer = edgelmm.load(bundle, n_threads=1, image_tokens=4)
    assert fewer.answer(image, "Describe it.", max_tokens=2).timings.image_tokens == 4
    assert fewer.answer(image, "Describe it.", max_tokens=2, image_tokens=16).timings.image_tokens == 16


def test_a_projector_that_merges_tokens_has_no_scores(tmp_path):
    import edgelmm
    from edgelmm.bundle_format import load_manifest
    from edgelmm.export.bundle import write_bundle

    torch.manual_seed(0)
    parts = build_model("tiny", projector="ldpv2", projector_args={"pool": 2})
    bundle = write_bundle(parts, tmp_path / "b", quant="f32")
    assert load_manifest(bundle).vision.output.importance is None
    model = edgelmm.load(bundle, n_threads=1)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    assert model.answer(image, "What is it?", max_tokens=2, image_tokens=4).timings.image_tokens == 4  # all of them
    with pytest.raises(UserError, match="gives no token importance"):
        model.ask(image, "What is it?", image_tokens=2)


def test_eval_reads_fewer_tokens_with_either_selection(checkpoint, scenes_dir, tmp_path, capsys, monkeypatch):
    from edgelmm.export.bundle import export_bundle
    from test_runtime import run_cli

    bundle = export_bundle(checkpoint, tmp_path / "b", quant="f32")
    data = scenes_dir / "eval.json"
    reports = {}
    for name, extra in {"all": [], "half": ["--image-tokens", 8], "random": ["--image-tokens", 8, "--selection", "random"]}.items():
        out = tmp_path / f"{name}.json"
        code, _, err = run_cli(capsys, monkeypatch, "eval", bundle, "--data", data, "--limit", 24, "--threads", 1,
                               "--json", out, "-q", *extra)
        assert code == 0, err
        reports[name] = json.loads(out.read_text())
    assert all(r["n"] == 24 for r in reports.values())
    code, _, err = run_cli(capsys, monkeypatch, "eval", checkpoint, "--data", data, "--image-tokens", 8)
    assert code == 2 and "applies to bundles" in err
    code, _, err = run_cli(capsys, monkeypatch, "eval", bundle, "--data", data, "--image-tokens", 99)
    assert code == 2 and "from 1 to 16" in err


def test_the_random_control_keeps_other_tokens_each_image():
    from edgelmm.runtime.image_embeddings import ImageEmbeddings

    embeds = ImageEmbeddings(np.arange(32, dtype=np.float32).reshape(16, 2), importance=np.arange(16.0))
    best = embeds.reduced(4, 0).array
    assert best.tolist() == embeds.array[12:].tolist()
    draws = [embeds.reduced(4, 0, "random", seed).array.tolist() for seed in range(3)]
    assert best.tolist() not in draws and draws[0] != draws[1]
    assert embeds.reduced(4, 0, "random", 0).array.tolist() == draws[0]  # a run repeats

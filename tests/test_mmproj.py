"""The mmproj GGUF: read back with gguf-py, loaded by llama.cpp's libmtmd, and compared with the ONNX graph."""

import numpy as np
import pytest
import torch

from edgelmm.errors import ConfigError
from edgelmm.modeling import build_model


@pytest.fixture(scope="module")
def siglip_parts(tmp_path_factory):
    """A tiny model with a SigLIP tower (no CLS token: llama.cpp's graph computes exactly its features)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                         num_attention_heads=2, image_size=32, patch_size=8,
                                         hidden_act="gelu_pytorch_tanh")).save_pretrained(folder)
    return build_model(vision=str(folder), llm="tiny")


def _bundle(parts, folder):
    from edgelmm.export.bundle import write_bundle

    return write_bundle(parts, folder, quant="f32", vision="fp32", mmproj=True)


def _fields(path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    values = {name: field.contents() for name, field in reader.fields.items()}
    return values, {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}


def test_mmproj_keys_and_tensors_for_a_clip_tower(tiny, tmp_path):
    from edgelmm.bundle_format import load_manifest
    from edgelmm.export.verify import verify_bundle

    bundle = _bundle(tiny, tmp_path / "b")
    manifest = load_manifest(bundle)
    assert manifest.files["mmproj"].path == "mmproj-f16.gguf"
    assert not any(role.startswith("vision_data") for role in manifest.files)  # its own role
    values, shapes = _fields(bundle / "mmproj-f16.gguf")
    vision = tiny.model.config.vision_config  # 2 layers; LLaVA reads the second-to-last: 1 layer kept
    assert values["general.architecture"] == "clip" and values["clip.projector_type"] == "mlp"
    assert values["clip.has_vision_encoder"] is True and values["clip.use_gelu"] is False  # quick GELU
    assert values["clip.vision.block_count"] == 1 and values["clip.vision.feature_layer"] == [1]
    assert values["clip.vision.image_size"] == 32 and values["clip.vision.patch_size"] == 8
    assert values["clip.vision.embedding_length"] == vision.hidden_size
    assert values["clip.vision.image_mean"] == pytest.approx(list(tiny.image_spec.mean))
    d, lm = vision.hidden_size, tiny.model.config.text_config.hidden_size
    assert shapes["v.class_embd"] == (d,) and shapes["v.position_embd.weight"] == (17, d)
    assert shapes["v.patch_embd.weight"] == (d, 3, 8, 8) and "v.pre_ln.weight" in shapes
    assert shapes["v.blk.0.ffn_up.weight"] == (vision.intermediate_size, d)
    assert shapes["mm.0.weight"] == (lm, d) and shapes["mm.2.weight"] == (lm, lm)
    assert "v.blk.1.attn_q.weight" not in shapes and "v.post_ln.weight" not in shapes  # past the features
    assert verify_bundle(bundle) == []  # libmtmd loads it beside the bundle's language model


def _embeddings(bundle, parts, rgb):
    """(ONNX graph, llama.cpp's libmtmd) embeddings of one image."""
    import llama_cpp
    import onnxruntime as ort

    from edgelmm.imaging import preprocess
    from edgelmm.runtime.mtmd import MtmdVision

    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"pixel_values": preprocess(rgb, parts.image_spec)[None]})[0][0]
    llm = llama_cpp.Llama(str(bundle / "lm-f32.gguf"), n_ctx=64, n_threads=1, verbose=False)
    theirs = MtmdVision(bundle / "mmproj-f16.gguf", llm.model).encode(rgb, ours.shape[1])
    llm.close()
    return ours, theirs


def _cosine(a, b) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def test_llama_cpp_embeddings_match_onnx_for_a_siglip_tower(siglip_parts, tmp_path):
    bundle = _bundle(siglip_parts, tmp_path / "b")
    values, shapes = _fields(bundle / "mmproj-f16.gguf")
    assert values["clip.use_gelu"] is True and "v.class_embd" not in shapes and "v.patch_embd.bias" in shapes
    # An image at the tower's own size: both sides then see the same pixels, with no resampling.
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours, theirs = _embeddings(bundle, siglip_parts, rgb)
    assert theirs.shape == ours.shape == (siglip_parts.num_image_tokens, 64)
    assert _cosine(ours, theirs) >= 0.999


def test_llama_cpp_clip_embeddings_load_but_differ(tiny, tmp_path):
    """llama.cpp's CLIP graph puts CLS after the patches with positions in order (llama.cpp #25814), so
    its embeddings differ from Hugging Face's; they still have the model's shape."""
    bundle = _bundle(tiny, tmp_path / "b")
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours, theirs = _embeddings(bundle, tiny, rgb)
    assert theirs.shape == ours.shape and np.isfinite(theirs).all()


def test_mmproj_refuses_projectors_llama_cpp_cannot_run(tmp_path):
    from edgelmm.export.bundle import write_bundle

    parts = build_model("tiny", projector="ldpv2", projector_args={"pool": 2})
    with pytest.raises(ConfigError, match="no mmproj layout for the 'ldpv2' projector"):
        write_bundle(parts, tmp_path / "b", quant="f32", mmproj=True)
    assert not (tmp_path / "b").exists()  # refused before any work


def test_cli_export_mmproj_and_show(checkpoint, tmp_path, capsys, monkeypatch):
    from test_runtime import run_cli

    out = tmp_path / "bundle"
    code, _, _ = run_cli(capsys, monkeypatch, "export", checkpoint, "--out", out, "--quant", "f32", "--mmproj")
    assert code == 0 and (out / "mmproj-f16.gguf").is_file()
    code, shown, _ = run_cli(capsys, monkeypatch, "show", out)
    assert code == 0 and "mmproj      mmproj-f16.gguf" in shown

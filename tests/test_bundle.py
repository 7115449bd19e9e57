"""`edgelmm export`, `show` and `verify` on a tiny checkpoint, and every way a bundle can be wrong."""

import errno
import json

import pytest

from edgelmm import cli
from edgelmm.bundle_format import MANIFEST


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from edgelmm.export.bundle import export_bundle

    return export_bundle(checkpoint, tmp_path_factory.mktemp("bundles") / "tiny-q4")


def test_bundle_holds_its_files_and_manifest(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert sorted(p.name for p in bundle.iterdir()) == sorted([MANIFEST, "vision.onnx", "lm-q4_k_m.gguf"])
    assert manifest["lm"] == {"architecture": "phi3", "quant": "q4_k_m", "context_length": 512, "vocab_size": 512}
    assert manifest["vision"]["output"] == {"name": "image_embeds", "tokens": 16, "width": 64,
                                          "importance": "image_importance"}
    assert manifest["vision"]["input"]["size"] == 32 and manifest["vision"]["input"]["channel_order"] == "RGB"
    assert manifest["prompt"]["image_placeholder"] == "<image>" and "<|end|>" in manifest["prompt"]["stop"]
    assert "<|end|>" in manifest["prompt"]["chat_template"]
    for entry in manifest["files"].values():
        assert (bundle / entry["path"]).stat().st_size == entry["size"] and len(entry["sha256"]) == 64


def test_show_and_verify(bundle, capsys):
    code, out, _ = run(capsys, "show", bundle)
    assert code == 0 and "phi3, q4_k_m" in out and "16 tokens x 64" in out
    code, out, _ = run(capsys, "verify", bundle)
    assert code == 0 and out.strip().endswith(": ok")


def test_verify_names_what_is_wrong(bundle, tmp_path, capsys):
    import shutil

    broken = shutil.copytree(bundle, tmp_path / "b")
    data = bytearray((broken / "vision.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "vision.onnx").write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", broken)
    assert code == 2 and "vision file vision.onnx fails its sha256 check" in err
    (broken / "lm-q4_k_m.gguf").unlink()
    code, _, err = run(capsys, "verify", broken)
    assert code == 2 and "lm file lm-q4_k_m.gguf is missing" in err

    manifest = json.loads((bundle / MANIFEST).read_text())
    newer = shutil.copytree(bundle, tmp_path / "newer")
    (newer / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    code, _, err = run(capsys, "verify", newer)
    assert code == 2 and "bundle format 99" in err and "upgrade edgelmm" in err
    (newer / MANIFEST).unlink()
    code, _, err = run(capsys, "verify", newer)
    assert code == 2 and f"{MANIFEST} is missing" in err


def test_export_refuses_to_overwrite_and_bad_checkpoints(bundle, checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "export", checkpoint, "--out", bundle)
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "export", tmp_path / "nothing", "--out", tmp_path / "b")
    assert code == 2 and "checkpoint folder not found" in err
    code, _, err = run(capsys, "export", checkpoint, "--out", tmp_path / "b", "--quant", "q3")
    assert code == 2 and "--quant" in err
    assert not (tmp_path / "b").exists()


def test_unsupported_language_model_is_named(tmp_path, capsys):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                        num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
                         text_config=MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                   num_attention_heads=4, num_key_value_heads=2,
                                                   vocab_size=300).to_dict(), image_token_index=299)
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path / "mistral")
    from edgelmm.tokenizer import train_tokenizer

    train_tokenizer(["a red circle"] * 10, 280).save_pretrained(tmp_path / "mistral")
    code, _, err = run(capsys, "export", tmp_path / "mistral", "--out", tmp_path / "b")
    assert code == 2 and "'mistral'" in err and "llama, phi3, qwen2" in err
    assert not (tmp_path / "b").exists()


def test_disk_full_during_export_leaves_nothing(checkpoint, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "lm.gguf"))

    monkeypatch.setattr("edgelmm.export.gguf_lm.export_gguf", full)
    code, _, err = run(capsys, "export", checkpoint, "--out", tmp_path / "b")
    assert code == 2 and err.splitlines()[-1].startswith("edgelmm: error: No space left on device")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_every_quant_level_and_vision_precision_verifies(checkpoint, tmp_path):
    from edgelmm.export.bundle import export_bundle
    from edgelmm.export.verify import verify_bundle

    for quant, vision in (("q4_0", "int8"), ("q8_0", "fp16"), ("f16", "fp32"), ("f32", "fp32")):
        out = export_bundle(checkpoint, tmp_path / quant, quant=quant, vision=vision)
        assert verify_bundle(out) == [], quant


def test_int8_vision_stays_close_to_fp32(checkpoint, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from edgelmm.export.bundle import export_bundle

    outputs = {}
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    for precision in ("fp32", "int8"):
        b = export_bundle(checkpoint, tmp_path / precision, quant="f16", vision=precision)
        session = ort.InferenceSession(str(b / "vision.onnx"), providers=["CPUExecutionProvider"])
        outputs[precision] = session.run(None, {"pixel_values": x})[0].reshape(-1)
    a, q = outputs["fp32"], outputs["int8"]
    assert float(a @ q / (np.linalg.norm(a) * np.linalg.norm(q))) >= 0.99


def test_quantize_report(checkpoint, scenes_dir, tmp_path, capsys):
    code, out, err = run(capsys, "quantize", "report", checkpoint, "--data", scenes_dir / "eval.json", "--limit", "4",
                         "--json", tmp_path / "r.json", "--markdown", tmp_path / "r.md")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    levels = {r["level"]: r for r in report["levels"]}
    assert list(levels) == ["f32", "f16", "q8_0", "q4_k_m", "q4_0"]
    assert levels["f32"]["top1_agreement"] == 1.0 and levels["f32"]["mean_kl"] < 1e-6
    assert levels["q4_0"]["lm_bytes"] < levels["q8_0"]["lm_bytes"] < levels["f16"]["lm_bytes"] < levels["f32"]["lm_bytes"]
    assert all(r["mean_kl"] >= -1e-9 for r in levels.values())
    assert (tmp_path / "r.md").read_text().startswith("Quantization report")


def test_language_model_on_meta_device_streams_into_a_bundle(tmp_path):
    """A model built without LM weights exports with weights made per tensor, and the bundle verifies."""
    import torch

    from edgelmm.export.bundle import write_bundle
    from edgelmm.export.verify import verify_bundle
    from edgelmm.modeling import build_model

    parts = build_model("tiny", lm_weights=False)
    assert parts.model.lm_head.weight.is_meta and not parts.model.projector.linear_1.weight.is_meta
    made = []

    def materialize(name, tensor):
        made.append(name)
        return torch.randn(tensor.shape) * 0.02

    with pytest.raises(ValueError, match="meta device"):
        write_bundle(parts, tmp_path / "none")
    out = write_bundle(parts, tmp_path / "b", materialize=materialize)
    assert verify_bundle(out) == []
    assert "lm_head.weight" in made and "model.embed_tokens.weight" in made
    assert json.loads((out / MANIFEST).read_text())["provenance"]["source_checkpoint"] is None


@pytest.mark.parametrize("lm_type", ["phi3", "llama"])
def test_plain_transformers_llava_folder_exports_and_runs(lm_type, tmp_path, scenes_dir):
    """A folder written by transformers alone (llava-hf / xtuner layout: no edgelmm fields, a CLIP image
    processor, the LM's own chat template) exports to a bundle whose answers equal the torch backend's."""
    import torch
    from transformers import (AutoConfig, CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration)

    import edgelmm
    from edgelmm.export.bundle import export_bundle
    from edgelmm.modeling.build import default_tokenizer
    from edgelmm.tokenizer import IMAGE_TOKEN

    tok = default_tokenizer(512)
    text = AutoConfig.for_model(lm_type, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    folder = tmp_path / "plain"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    assert "edgelmm" not in (folder / "config.json").read_text()

    bundle = export_bundle(folder, tmp_path / "bundle", quant="f16")
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["lm"]["architecture"] == lm_type and manifest["vision"]["output"]["tokens"] == 16
    fast, ref = edgelmm.load(bundle), edgelmm.load(bundle, backend="torch")
    for i in range(5):
        image = scenes_dir / "images" / f"es0_{i:06d}.png"
        assert fast.ask(image, "What is here?", max_tokens=6) == ref.ask(image, "What is here?", max_tokens=6)

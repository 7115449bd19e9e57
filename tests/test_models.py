"""Presets, projectors and checkpoints on tiny models."""

import json

import pytest
import torch

from edgelmm.data.llava import expand_image_token
from edgelmm.errors import CheckpointError, ConfigError, UnknownNameError
from edgelmm.modeling import build_model, load_checkpoint, save_checkpoint
from edgelmm.modeling.build import preset_summary
from edgelmm.modeling.projectors import PROJECTORS
from edgelmm.modeling.projectors.base import ProjectorInput
from edgelmm.presets import PRESETS

# Arguments that make each projector produce a distinct token count on the tiny 4x4 patch grid.
PROJECTOR_ARGS = {"linear": {}, "mlp2x_gelu": {}, "ldpv2": {"pool": 2}, "resampler": {"num_queries": 5}}
TINY_TOKENS = {"linear": 16, "mlp2x_gelu": 16, "ldpv2": 4, "resampler": 5}


def prompt_ids(parts, question="How many circles?"):
    tok = parts.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": f"<image>\n{question}"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False).input_ids
    ids, _ = expand_image_token(ids, [0] * len(ids), tok.convert_tokens_to_ids("<image>"), parts.num_image_tokens)
    return torch.tensor([ids])


def logits(model, ids, pixels):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


def test_registry_holds_the_four_projectors():
    assert set(PROJECTORS) == set(PROJECTOR_ARGS)


@pytest.mark.parametrize("name", sorted(PROJECTOR_ARGS))
def test_projector_shapes_and_token_counts(name):
    cls = PROJECTORS.get(name)
    inp = ProjectorInput(vision_dim=24, text_dim=64, num_patches=576)  # a 24x24 grid, as CLIP ViT-L/336
    proj = cls(inp, **PROJECTOR_ARGS[name])
    out = proj(torch.randn(3, 576, 24))
    expected = {"linear": 576, "mlp2x_gelu": 576, "ldpv2": 144, "resampler": 5}[name]
    assert out.shape == (3, expected, 64)
    assert cls.num_tokens(inp, **PROJECTOR_ARGS[name]) == expected
    out.sum().backward()
    assert all(p.grad is not None for p in proj.parameters())


def test_ldpv2_needs_a_square_grid_and_a_dividing_pool():
    ldpv2 = PROJECTORS.get("ldpv2")
    with pytest.raises(ConfigError, match="square"):
        ldpv2(ProjectorInput(24, 64, 577))  # CLS kept
    with pytest.raises(ConfigError, match="divide"):
        ldpv2(ProjectorInput(24, 64, 576), pool=5)


@pytest.mark.parametrize("name", sorted(PROJECTOR_ARGS))
def test_tiny_model_with_every_projector_runs_and_round_trips(name, tmp_path):
    parts = build_model("tiny", projector=name, projector_args=PROJECTOR_ARGS[name])
    assert parts.num_image_tokens == TINY_TOKENS[name]
    ids, pixels = prompt_ids(parts), torch.randn(1, 3, 32, 32)
    before = logits(parts.model, ids, pixels)
    assert before.shape == (1, ids.shape[1], 512) and torch.isfinite(before).all()

    save_checkpoint(parts, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["projector_type"] == name and config["projector_args"] == PROJECTOR_ARGS[name]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded.model.projector) is type(parts.model.projector)
    assert loaded.image_spec == parts.image_spec
    assert loaded.tokenizer.get_vocab() == parts.tokenizer.get_vocab()
    assert torch.equal(logits(loaded.model, ids, pixels), before)


def test_mlp2x_gelu_checkpoint_loads_in_plain_transformers(tiny, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: F401

    save_checkpoint(tiny, tmp_path / "ckpt")
    plain = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    assert type(plain) is LlavaForConditionalGeneration
    ids, pixels = prompt_ids(tiny), torch.randn(1, 3, 32, 32)
    assert torch.equal(logits(plain, ids, pixels), logits(tiny.model, ids, pixels))


def test_tiny_builds_and_runs_fast(tiny):
    import time

    ids, pixels = prompt_ids(tiny), torch.randn(2, 3, 32, 32)
    start = time.perf_counter()
    with torch.no_grad():
        out = tiny.model(input_ids=ids.repeat(2, 1), pixel_values=pixels)
    assert out.logits.shape[0] == 2
    assert time.perf_counter() - start < 5  # generous: "well under a second" on an idle machine


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_small_presets_build_with_real_weights(name):
    parts = build_model(name)
    cfg = parts.model.config
    assert cfg.edgelmm_preset == name and cfg.projector_type == "mlp2x_gelu"
    assert len(parts.tokenizer) <= cfg.text_config.vocab_size
    assert cfg.image_token_id == parts.tokenizer.convert_tokens_to_ids("<image>")
    if name == "demo":  # llama.cpp's Q4_K needs LM matrix rows that are multiples of 256
        assert cfg.text_config.hidden_size % 256 == 0 and cfg.text_config.intermediate_size % 256 == 0


def test_every_preset_builds_on_the_meta_device():
    rows = {name: preset_summary(name) for name in PRESETS}
    assert rows["llava-phi3-mini"]["image_tokens"] == 576
    assert 3.7e9 < rows["llava-phi3-mini"]["params"]["lm"] < 3.9e9  # Phi-3-mini: 3.8B
    assert 3.0e8 < rows["llava-phi3-mini"]["params"]["vision"] < 3.1e8  # CLIP ViT-L/14: 303M
    assert 4.8e8 < rows["llava-qwen2-0.5b"]["params"]["lm"] < 5.0e8  # Qwen2.5-0.5B: 494M
    assert rows["llava-qwen2-0.5b"]["image_tokens"] == 196  # SigLIP has no CLS: every patch is kept


def test_unknown_preset_and_projector_list_the_valid_names():
    with pytest.raises(UnknownNameError, match="valid: tiny, demo"):
        build_model("huge")
    with pytest.raises(UnknownNameError, match="unknown projector 'qformer'"):
        build_model("tiny", projector="qformer")
    with pytest.raises(ConfigError, match="bad arguments"):
        build_model("tiny", projector="resampler", projector_args={"queries": 3})


def test_bad_checkpoints_are_clear_errors(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")
    ckpt = save_checkpoint(tiny, tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(ckpt)


def test_saving_over_an_existing_checkpoint_needs_force(tiny, tmp_path):
    from edgelmm.errors import UserError

    save_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(UserError, match="--force"):
        save_checkpoint(tiny, tmp_path / "ckpt")
    save_checkpoint(tiny, tmp_path / "ckpt", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

"""build_model from local pretrained parts: tiny random checkpoints written to temporary folders."""

import pytest
import torch

from edgelmm.errors import ConfigError
from edgelmm.modeling import build_model, load_checkpoint, save_checkpoint
from edgelmm.tokenizer import IMAGE_TOKEN

LM_CONFIGS = {
    "phi3": ("Phi3Config", {}),
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
}


def plain_tokenizer(vocab_size):
    """A pretrained-style tokenizer: no `<image>`, no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgelmm.data.edgescenes import text_corpus

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(text_corpus(50, seed=7), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    import transformers

    dirs = {}
    for arch, (config_class, extra) in LM_CONFIGS.items():
        tok = plain_tokenizer(300)
        config = getattr(transformers, config_class)(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None, **extra)
        torch.manual_seed(0)
        lm = transformers.AutoModelForCausalLM.from_config(config)
        d = tmp_path_factory.mktemp(arch)
        lm.save_pretrained(d)
        tok.save_pretrained(d)
        dirs[arch] = d
    return dirs


@pytest.fixture(scope="module")
def vision_dirs(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, SiglipVisionConfig, SiglipVisionModel

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                 image_size=32, patch_size=8)
    clip = CLIPModel(CLIPConfig(vision_config=small, text_config=dict(hidden_size=32, intermediate_size=64,
                                                                     num_hidden_layers=1, num_attention_heads=2),
                                projection_dim=16))
    siglip = SiglipVisionModel(SiglipVisionConfig(**small))
    dirs = {"clip": tmp_path_factory.mktemp("clip"), "siglip": tmp_path_factory.mktemp("siglip")}
    clip.save_pretrained(dirs["clip"])  # a full CLIP model: the builder takes its vision half
    siglip.save_pretrained(dirs["siglip"])
    return dirs


@pytest.mark.parametrize("arch", sorted(LM_CONFIGS))
@pytest.mark.parametrize("vision", ["clip", "siglip"])
def test_build_from_local_parts(arch, vision, lm_dirs, vision_dirs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModel

    parts = build_model(vision=str(vision_dirs[vision]), llm=str(lm_dirs[arch]), projector="ldpv2")
    model, tok = parts.model, parts.tokenizer

    # The tokenizer got `<image>` (one id past the old vocabulary) and the embeddings grew to hold it.
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_id == len(tok) - 1 == model.config.image_token_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert tok.chat_template

    # Pretrained weights arrived unchanged.
    source_lm = AutoModelForCausalLM.from_pretrained(lm_dirs[arch])
    old = source_lm.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: old.shape[0]], old)
    assert torch.equal(model.language_model.layers[1].mlp.down_proj.weight, source_lm.model.layers[1].mlp.down_proj.weight)
    source_vision = AutoModel.from_pretrained(vision_dirs[vision])
    source_vision = getattr(source_vision, "vision_model", source_vision)
    assert torch.equal(model.vision_tower.embeddings.patch_embedding.weight,
                       source_vision.embeddings.patch_embedding.weight)

    # CLIP drops its CLS token (4x4 patches -> 2x2 after pooling); SigLIP has none to drop.
    assert parts.num_image_tokens == 4
    assert model.config.vision_feature_select_strategy == ("default" if vision == "clip" else "full")
    text = tok.apply_chat_template([{"role": "user", "content": "<image>\nWhat is it?"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False).input_ids
    k = ids.index(image_id)
    ids = ids[:k] + [image_id] * 4 + ids[k + 1:]
    out = model(input_ids=torch.tensor([ids]), pixel_values=torch.randn(1, 3, 32, 32))
    assert torch.isfinite(out.logits).all()

    # And the joined model saves and loads like any other.
    loaded = load_checkpoint(save_checkpoint(parts, tmp_path / "joined"))
    assert loaded.model.config.text_config.model_type == arch


def test_preset_and_path_mix(lm_dirs):
    parts = build_model(vision="tiny", llm=str(lm_dirs["phi3"]))
    assert parts.num_image_tokens == 16 and parts.model.config.edgelmm_preset is None


def test_unknown_part_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a preset"):
        build_model(vision=str(tmp_path / "missing"), llm="tiny")
    with pytest.raises(ConfigError, match="needs a preset"):
        build_model(vision="tiny")

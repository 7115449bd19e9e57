"""Shared tests over every registered language-model architecture: a new one (one module in
edgelmm/modeling/lm/) is covered by them the moment it is registered."""

import numpy as np
import pytest
import torch

from edgelmm.modeling import build_model
from edgelmm.modeling.lm import LANGUAGE_ARCHS, LanguageArch
from test_export import TOKENIZER_CORPUS


def _tiny_lm(arch, monkeypatch):
    """A tiny model with the given LM architecture (grouped-query attention; Qwen2 with tied embeddings)."""
    from edgelmm.presets import PRESETS, Preset

    tiny = PRESETS.get("tiny")
    extra = {"tie_word_embeddings": True} if arch == "qwen2" else {}
    preset = Preset(f"tiny-{arch}", "test", tiny.vision_arch, tiny.vision, arch,
                    {**tiny.lm, "num_key_value_heads": 2, **extra})
    monkeypatch.setitem(PRESETS._items, preset.name, preset)  # registered for this test only
    torch.manual_seed(0)
    return build_model(preset.name)


def check_gguf_matches_torch(arch, tmp_path, monkeypatch):
    """The architecture's GGUF (f32) tokenizes like its tokenizer and gives the torch model's logits."""
    import llama_cpp

    from edgelmm.export.gguf_lm import export_gguf

    parts = _tiny_lm(arch, monkeypatch)
    path = export_gguf(parts, tmp_path / "lm.gguf", dtype="f32")
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    for text in TOKENIZER_CORPUS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == \
            parts.tokenizer(text, add_special_tokens=False).input_ids, text
    ids = parts.tokenizer(" ".join(TOKENIZER_CORPUS), add_special_tokens=False).input_ids
    llm.eval(ids)
    cpp = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        ref = parts.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert np.abs(cpp - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("arch", LANGUAGE_ARCHS.names())
def test_gguf_f32_logits_and_tokenization_match_torch(arch, tmp_path, monkeypatch):
    check_gguf_matches_torch(arch, tmp_path, monkeypatch)


def test_a_new_architecture_is_one_registration(tmp_path, monkeypatch):
    """Mistral registered here as llama.cpp runs it (its llama graph, Llama's rotary permutation) passes
    the same checks, with no other edit."""
    from edgelmm.modeling.lm.llama import rope_to_gguf

    mistral = LanguageArch("mistral", "MistralConfig", "mistral", gguf_arch="LLAMA", to_gguf=rope_to_gguf)
    monkeypatch.setitem(LANGUAGE_ARCHS._items, "mistral", mistral)
    check_gguf_matches_torch("mistral", tmp_path, monkeypatch)


def test_unknown_architectures_name_the_supported_ones():
    from edgelmm.errors import ConfigError
    from edgelmm.modeling.lm import language_arch_of

    assert LANGUAGE_ARCHS.names() == ["llama", "phi3", "qwen2"]
    with pytest.raises(ConfigError, match="unsupported language-model architecture 'gpt2'; supported: llama, phi3"):
        language_arch_of("gpt2")

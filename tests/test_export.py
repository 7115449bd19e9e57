"""Export parity on tiny random models: ONNX vision vs torch, GGUF (llama.cpp) vs torch."""

import numpy as np
import pytest
import torch

from edgelmm.modeling import build_model

TOKENIZER_CORPUS = ["How many red circles are there?", "Naïve café, crème brûlée", "東京タワー 🌍🚀 emoji",
                    " 12345 x 3.14159", "a\n\n\nb\tc", "   lots   of   space  ", "<s><|user|>\nHi<|end|>\n"]


@pytest.mark.parametrize("projector,args", [("mlp2x_gelu", {}), ("linear", {}), ("ldpv2", {"pool": 2}),
                                            ("resampler", {"num_queries": 5})])
def test_onnx_vision_matches_torch(projector, args, tmp_path):
    import onnxruntime as ort

    from edgelmm.export.onnx_vision import export_vision_onnx

    parts = build_model("tiny", projector=projector, projector_args=args)
    path = export_vision_onnx(parts.model, tmp_path / "vision.onnx", image_size=32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 32, 32)
        cfg = parts.model.config
        with torch.no_grad():
            ref = parts.model.get_image_features(pixel_values=x, vision_feature_layer=cfg.vision_feature_layer,
                                                 vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        ref = torch.stack(list(ref.pooler_output)).numpy()
        out = session.run(None, {"pixel_values": x.numpy()})[0]
        assert out.shape == (batch, parts.num_image_tokens, cfg.text_config.hidden_size)
        assert np.abs(out - ref).max() <= 1e-4


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


@pytest.mark.parametrize("arch", ["phi3", "llama", "qwen2"])
def test_gguf_f32_logits_and_tokenization_match_torch(arch, tmp_path, monkeypatch):
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


def test_image_embeddings_injected_into_llama_cpp_match_torch(tmp_path):
    """Text tokens, then image embeddings as a float batch, then text: logits equal torch's inputs_embeds."""
    import llama_cpp

    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.runtimes.llama_batch import SequenceDecoder

    torch.manual_seed(0)
    parts = build_model("tiny")
    path = export_gguf(parts, tmp_path / "lm.gguf", dtype="f32")
    tok = parts.tokenizer
    before = tok("<s><|user|>\n", add_special_tokens=False).input_ids
    after = tok("\nHow many circles are there?<|end|>\n<|assistant|>\n", add_special_tokens=False).input_ids
    image = torch.randn(parts.num_image_tokens, 64) * 0.5  # stands in for the vision graph's output

    embed = parts.model.get_input_embeddings()
    with torch.no_grad():
        inputs = torch.cat([embed(torch.tensor(before)), image, embed(torch.tensor(after))])[None]
        ref = parts.model.model.language_model(inputs_embeds=inputs).last_hidden_state
        ref = parts.model.lm_head(ref)[0].numpy()

    llm = llama_cpp.Llama(str(path), n_ctx=128, verbose=False, n_threads=2)
    dec = SequenceDecoder(llm)
    got = np.concatenate([dec.tokens(before, all_logits=True), dec.embeddings(image.numpy(), all_logits=True),
                          dec.tokens(after, all_logits=True)])
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())
    # Continuing the cache after a reset gives the same answer again.
    dec.reset()
    dec.tokens(before)
    dec.embeddings(image.numpy())
    assert np.allclose(dec.tokens(after), ref[-1], atol=1e-3)

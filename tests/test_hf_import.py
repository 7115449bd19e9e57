"""Model folders that transformers wrote (llava-hf's layout, no edgelmm fields) export to bundles whose
image embeddings and greedy answers equal transformers' own `LlavaForConditionalGeneration`."""

import json

import numpy as np
import pytest

from edgelmm.bundle_format import MANIFEST
from test_export import _sentencepiece_tokenizer

LAYOUTS = {  # the structure of public llava-hf models, at tiny width
    "llava-phi-3-mini-hf": dict(lm="phi3", tower="clip", feature_layer=-2, strategy="default",
                                tokenizer="sentencepiece"),
    "phi3, CLIP, SentencePiece-style tokenizer.json": dict(lm="phi3", tower="clip", feature_layer=-2,
                                                           strategy="default", tokenizer="spm"),
    "phi3, CLIP, byte-level BPE": dict(lm="phi3", tower="clip", feature_layer=-2, strategy="default"),
    "llava-interleave-qwen-hf": dict(lm="qwen2", tower="siglip", feature_layer=-1, strategy="full"),
    "llama, CLIP, two feature layers": dict(lm="llama", tower="clip", feature_layer=[-3, -1], strategy="default"),
    "qwen2, SigLIP, two feature layers": dict(lm="qwen2", tower="siglip", feature_layer=[1, -1], strategy="full"),
}


def _folder(tmp_path, lm, tower, feature_layer, strategy, tokenizer="bpe"):
    """A LLaVA folder as transformers saves it: config, weights, tokenizer, image processor. `tokenizer`:
    "bpe" (byte-level, as Qwen2's), "sentencepiece" (a BPE model with byte fallback trained by the
    sentencepiece library and converted by transformers, as Phi-3's tokenizer.model) or "spm" (the
    same kind written directly as a tokenizer.json in Llama-2's layout)."""
    import torch
    from transformers import (AutoConfig, CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration, SiglipImageProcessor, SiglipVisionConfig)

    from edgelmm.modeling.build import default_tokenizer
    from edgelmm.tokenizer import IMAGE_TOKEN

    tok = {"bpe": lambda: default_tokenizer(512), "spm": lambda: _sentencepiece_tokenizer("prepend"),
           "sentencepiece": lambda: _trained_sentencepiece(tmp_path / "spm")}[tokenizer]()
    text = AutoConfig.for_model(lm, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, tie_word_embeddings=lm == "qwen2")
    shape = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=2)
    vision = CLIPVisionConfig(**shape) if tower == "clip" else SiglipVisionConfig(**shape)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    folder = tmp_path / "folder"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if tokenizer == "sentencepiece":  # published beside tokenizer.json, as Phi-3's is
        (folder / "tokenizer.model").write_bytes((tmp_path / "spm" / "tokenizer.model").read_bytes())
    if tower == "clip":
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    assert "edgelmm" not in (folder / "config.json").read_text()
    return folder, model, tok


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_transformers_folder_exports_with_transformers_answers(layout, tmp_path, scenes_dir):
    import onnxruntime as ort
    import torch
    from transformers import AutoImageProcessor

    import edgelmm
    from edgelmm.chat import ChatFormat
    from edgelmm.export.bundle import export_bundle
    from edgelmm.imaging import preprocess
    from edgelmm.tokenizer import IMAGE_TOKEN

    folder, model, tok = _folder(tmp_path, **LAYOUTS[layout])
    bundle = export_bundle(folder, tmp_path / "bundle", quant="f32", vision="fp32")
    manifest = json.loads((bundle / MANIFEST).read_text())
    tokens = manifest["vision"]["output"]["tokens"]
    assert tokens == 16 and manifest["lm"]["architecture"] == LAYOUTS[layout]["lm"]

    images = [scenes_dir / "images" / f"es0_{i:06d}.png" for i in range(4)]
    spec = edgelmm.load(bundle).backend.image_spec
    processor = AutoImageProcessor.from_pretrained(folder)
    vision = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    runtime = edgelmm.load(bundle)
    fmt = ChatFormat.from_tokenizer(tok, model.generation_config)
    for image in images:
        from PIL import Image

        theirs = processor(images=Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
        ours = preprocess(image, spec)
        assert np.abs(theirs[0].numpy() - ours).max() < 0.02  # the processor's resize, read from its config

        with torch.no_grad():
            expected = model.get_image_features(pixel_values=torch.from_numpy(ours)[None]).pooler_output[0]
        got = vision.run(None, {"pixel_values": ours[None]})[0][0]
        cosine = float((expected.numpy() * got).sum() / (np.linalg.norm(expected.numpy()) * np.linalg.norm(got)))
        assert cosine >= 0.9999

        before, _, after = fmt.render_text([("What is here?", None)]).partition(IMAGE_TOKEN)
        ids = tok(before, add_special_tokens=False).input_ids + [model.config.image_token_id] * tokens + \
            tok(after, add_special_tokens=False).input_ids
        with torch.no_grad():
            generated = model.generate(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(ours)[None],
                                       max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                                       eos_token_id=tok.convert_tokens_to_ids(fmt.stop))[0, len(ids):]
        assert runtime.ask(image, "What is here?", max_tokens=8) == _text(tok, generated.tolist())


def _trained_sentencepiece(folder):
    """Phi-3's tokenizer kind: a SentencePiece BPE model with byte fallback (trained here by the
    sentencepiece library), loaded by transformers from tokenizer.model, with Phi-3's chat tokens."""
    import sentencepiece
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    from edgelmm.export.gguf_tokenizer import SPACE
    from edgelmm.tokenizer import add_image_token
    from test_export import CHAT_TOKENS, TRAIN_TEXT

    folder.mkdir()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN_TEXT * 20), model_prefix=str(folder / "tokenizer"), vocab_size=400,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", minloglevel=2)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "legacy": False}))
    tok = AutoTokenizer.from_pretrained(folder, extra_special_tokens=CHAT_TOKENS)
    # Phi-3's published tokenizer.json writes "▁" with Prepend + Replace normalizers (a leading space
    # becomes "▁▁"), not the Metaspace that transformers' converter builds from tokenizer.model.
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.backend_tokenizer.pre_tokenizer = None
    return add_image_token(tok)


def _text(tok, ids: list[int]) -> str:
    """The text of generated ids as the runtime shows it: bytes joined, then decoded (an incomplete UTF-8
    sequence is U+FFFD, where transformers' byte fallback decoder would print "<0xF8>")."""
    import re

    from edgelmm.export.gguf_tokenizer import SPACE

    pieces = [p for i, p in zip(ids, tok.convert_ids_to_tokens(ids))
              if p is not None and i not in tok.all_special_ids]  # None: embedding rows past the vocabulary
    if not any(SPACE in p or re.fullmatch(r"<0x[0-9A-F]{2}>", p) for p in pieces):
        return tok.decode(ids, skip_special_tokens=True).strip()  # byte-level BPE decodes bytes alike
    data = b"".join(bytes([int(p[3:5], 16)]) if re.fullmatch(r"<0x[0-9A-F]{2}>", p) else p.replace(SPACE, " ").encode()
                    for p in pieces)
    return data.decode("utf-8", errors="replace").strip()


def test_a_folder_without_tokenizer_or_chat_template_is_one_clear_error(tmp_path, capfd):
    import shutil

    from edgelmm import cli

    folder, _, _ = _folder(tmp_path, **LAYOUTS["llava-interleave-qwen-hf"])
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(folder / name, bare / name)
    no_template = shutil.copytree(folder, tmp_path / "no-template")
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    capfd.readouterr()
    for source, expected in ((bare, "has no tokenizer"), (no_template, "has no chat template")):
        code = cli.main(["export", str(source), "--out", str(tmp_path / "out")])
        err = capfd.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()

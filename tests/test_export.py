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


def test_image_embeddings_injected_into_llama_cpp_match_torch(tmp_path):
    """Text tokens, then image embeddings as a float batch, then text: logits equal torch's inputs_embeds."""
    import llama_cpp

    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.runtime.llama_batch import SequenceDecoder

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


# Text for training the test tokenizers: the kinds of text in TOKENIZER_CORPUS (accents, digits, runs of
# spaces and newlines, contractions, punctuation before letters) so that merges exist for them; the CJK
# and emoji stay unseen, which exercises byte fallback.
TRAIN_TEXT = ["How many red circles are there? There are 3 red circles.",
              "Naïve café owners serve crème brûlée and café au lait.",
              "The numbers 12345, 3.14159 and 2024 appear in the text.",
              "a\n\nb\n\n\nc\td  lots   of   space   here  ",
              "What colour is the large star? The large star is blue.",
              "(hello) world's 'quoted' it's THEY'RE don't.\n\nNew paragraph.\n"]
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<image>"]


def _gguf_fields(path) -> dict:
    """A GGUF file's scalar and string metadata, and token types as a list."""
    from gguf import GGUFReader, GGUFValueType

    out = {}
    for name, field in GGUFReader(str(path)).fields.items():
        if name == "tokenizer.ggml.token_type":
            out[name] = [int(field.parts[i][0]) for i in field.data]
        elif field.types == [GGUFValueType.STRING]:
            out[name] = bytes(field.parts[field.data[0]]).decode()
        elif len(field.types) == 1 and field.types[0] != GGUFValueType.ARRAY:
            out[name] = field.parts[field.data[0]][0].item()
    return out


def _sentencepiece_tokenizer(prefix: str):
    """A tiny SentencePiece-style tokenizer in Llama-2's layout: BPE with byte fallback, <unk> <s> </s>,
    the 256 <0xNN> byte tokens, then the pieces; adds BOS like Llama-2's. `prefix` is how it writes "▁":
    "prepend" is Llama-2's tokenizer.json (Prepend + Replace normalizers); "always" and "first" are the
    Metaspace pre-tokenizer that transformers' LlamaTokenizer builds (legacy=True / False)."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from edgelmm.export.gguf_tokenizer import BYTE_TOKENS, SPACE
    from edgelmm.tokenizer import add_image_token

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if prefix == "prepend":
        bpe.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    else:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prefix, split=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", *BYTE_TOKENS],
                                  show_progress=False)
    bpe.train_from_iterator(TRAIN_TEXT * 10, trainer=trainer)
    # The byte tokens are plain vocabulary, not added tokens (a literal "<0x41>" in text is not one token).
    spec = json.loads(bpe.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in BYTE_TOKENS]
    bpe = Tokenizer.from_str(json.dumps(spec))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  extra_special_tokens=CHAT_TOKENS)
    return add_image_token(tok)  # edgelmm's chat template, pad = eos


def _lm_with_tokenizer(arch, tokenizer, monkeypatch):
    """A tiny model of the given LM architecture using `tokenizer`."""
    from edgelmm.presets import PRESETS, Preset

    tiny = PRESETS.get("tiny")
    preset = Preset(f"tiny-{arch}-tok", "test", tiny.vision_arch, tiny.vision, arch, tiny.lm)
    monkeypatch.setitem(PRESETS._items, preset.name, preset)
    torch.manual_seed(0)
    return build_model(preset.name, tokenizer=tokenizer)


# Texts to compare tokenizations on: the fixed corpus, the training text and its words one by one (alone,
# a word such as "are" is merged differently when llama.cpp gets the merge order wrong).
COMPARED_TEXT = [*TOKENIZER_CORPUS, *TRAIN_TEXT, *sorted({w for t in TRAIN_TEXT for w in t.split()})]


def _tokenization_mismatches(path, tokenizer) -> set[str]:
    """The texts that llama.cpp (reading the GGUF at `path`) tokenizes unlike the HF tokenizer."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    return {t for t in COMPARED_TEXT if llm.tokenize(t.encode(), add_bos=False, special=True)
            != tokenizer(t, add_special_tokens=False).input_ids}


@pytest.mark.parametrize("prefix", ["prepend", "always", "first"])
def test_gguf_sentencepiece_tokenizer_matches_hf(prefix, tmp_path, monkeypatch):
    import llama_cpp
    from gguf import TokenType

    from edgelmm.export.gguf_lm import export_gguf

    tok = _sentencepiece_tokenizer(prefix)
    path = export_gguf(_lm_with_tokenizer("llama", tok, monkeypatch), tmp_path / "lm.gguf", dtype="f32")
    meta = _gguf_fields(path)
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.add_space_prefix"] and meta["tokenizer.ggml.add_bos_token"]
    assert not meta["tokenizer.ggml.add_eos_token"]
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)
    types = meta["tokenizer.ggml.token_type"]
    assert types[:4] == [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE]
    assert types[3:259] == [TokenType.BYTE] * 256 and types[-1] == TokenType.UNUSED
    assert types[tok.convert_tokens_to_ids("<image>")] == TokenType.CONTROL

    # llama.cpp writes "▁" before every text fragment. Metaspace does not double a leading space and, with
    # prepend_scheme="first", writes none after a special token: only there may the two differ.
    differs = {t for t in COMPARED_TEXT
               if (prefix != "prepend" and t[0].isspace()) or (prefix == "first" and "<|" in t)}
    assert _tokenization_mismatches(path, tok) == differs
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    assert llm.tokenize("Hi there".encode(), add_bos=True) == tok("Hi there").input_ids  # BOS added alike


def test_gguf_qwen2_style_tokenizer_gets_qwen2_pre_tokenizer(tmp_path, monkeypatch):
    """A byte-level BPE that splits with Qwen2's regex (newline runs whole, one punctuation character joined to
    the letters after it, contractions in any case, digits one by one)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.export.gguf_tokenizer import QWEN2_REGEX
    from edgelmm.tokenizer import BOS, EOS, PAD, ROLE_TOKENS, SPECIAL_TOKENS, add_image_token

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_REGEX), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TRAIN_TEXT * 10, trainer=trainers.BpeTrainer(
        vocab_size=450, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = add_image_token(PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                                  extra_special_tokens=[*ROLE_TOKENS, "<image>"]))
    path = export_gguf(_lm_with_tokenizer("qwen2", tok, monkeypatch), tmp_path / "lm.gguf", dtype="f32")
    meta = _gguf_fields(path)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "qwen2")
    assert not meta["tokenizer.ggml.add_bos_token"]
    # With "gpt-2" instead, llama.cpp tokenizes 5 of these texts differently ("a\n\n\nb\tc", "(hello)", "THEY'RE").
    assert _tokenization_mismatches(path, tok) == set()


def _write_tokenizer(tok, path, vocab_size=512) -> dict:
    """Only the tokenizer metadata, written and read back."""
    from gguf import GGUFWriter

    from edgelmm.export.gguf_tokenizer import add_tokenizer

    writer = GGUFWriter(str(path), "llama")
    add_tokenizer(writer, tok, vocab_size)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return _gguf_fields(path)


def test_gguf_tokenizer_pre_tokenizer_choice_and_refusals(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgelmm.errors import ConfigError
    from edgelmm.tokenizer import train_tokenizer

    own = train_tokenizer(TRAIN_TEXT * 10, 300)
    assert _write_tokenizer(own, tmp_path / "own.gguf")["tokenizer.ggml.pre"] == "gpt-2"  # edgelmm's own BPE

    # Llama-3's regex (digits in threes) is not one llama.cpp's qwen2 or gpt-2 pre-tokenizer reproduces.
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    other = Tokenizer.from_str(own.backend_tokenizer.to_str())
    other.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3), "isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    with pytest.raises(ConfigError, match=r"supported: .*gpt-2.*qwen2"):
        _write_tokenizer(PreTrainedTokenizerFast(tokenizer_object=other), tmp_path / "llama3.gguf")

    # Unigram: llama.cpp's SPM merging is not Unigram's best segmentation, so it is refused.
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(TRAIN_TEXT * 10, trainer=trainers.UnigramTrainer(vocab_size=100, show_progress=False))
    with pytest.raises(ConfigError, match="Unigram.*supported: byte-level BPE"):
        _write_tokenizer(PreTrainedTokenizerFast(tokenizer_object=unigram), tmp_path / "unigram.gguf")


def test_quantized_gguf_agrees_with_torch(tmp_path, monkeypatch):
    """q4_k_m and q4_0 GGUFs of a random LM against the torch model, teacher-forced over 20 chat prompts
    (about 700 positions): next-token top-1 agreement and mean KL(torch || llama.cpp), as `edgelmm
    quantize report` measures them.

    The LM is 256 wide (feed-forward 768) so that llama.cpp's 4-bit types apply to every matrix instead
    of falling back to wider ones. Its weights are random, so next-token distributions are nearly flat
    (top probability about 0.0035 over 768 tokens) and 4-bit rounding flips many near-ties: measured
    agreement is 0.70 (q4_k_m) and 0.73 (q4_0), KL 0.0016 and 0.0026. The bounds are set against the
    other side: another random model of the same shape agrees on none of the ~700 positions, with a KL
    of 0.10, which is what a file with wrong or garbled tensors looks like. Agreement >= 0.4 and
    KL <= 0.01 leave 4-bit rounding a wide margin and fail a model unrelated to the torch one.
    """
    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.presets import PRESETS, Preset
    from edgelmm.quantize.gguf import quantize_gguf, tensor_types
    from edgelmm.eval.quantization import next_token_agreement
    from edgelmm.tokenizer import train_tokenizer

    tiny = PRESETS.get("tiny")
    lm = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, vocab_size=768, max_position_embeddings=256)
    preset = Preset("tiny-q4", "test", tiny.vision_arch, tiny.vision, "phi3", lm)
    monkeypatch.setitem(PRESETS._items, preset.name, preset)
    torch.manual_seed(0)
    parts = build_model(preset.name, tokenizer=train_tokenizer(TRAIN_TEXT * 10, 300))
    tok = parts.tokenizer
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q in ("How many red circles are there?", "What colour is the large star?",
                       "Is there a small green triangle?", "What is left of the square?")
             for a in ("3", "Blue.", "Yes, there is.", "A large star.", "There are 12345 circles.")]
    prompts = [tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False).input_ids for c in chats]
    # One right-padded batch: causal attention keeps each prompt's positions as if it were alone.
    longest = max(map(len, prompts))
    batch = torch.tensor([ids + [tok.pad_token_id] * (longest - len(ids)) for ids in prompts])
    with torch.no_grad():
        logits = parts.model(input_ids=batch).logits.numpy()
    ref = np.concatenate([row[: len(ids)] for row, ids in zip(logits, prompts)])

    def gguf_logits(path):
        from edgelmm.runtime.calibration import open_tuned
        from edgelmm.runtime.llama_batch import SequenceDecoder

        # One thread: on a busy machine llama.cpp's threads spin-wait for each other, which costs seconds here.
        # The weight layout this machine runs (llama.cpp's re-layout crashes on some CPUs).
        llm = open_tuned(path, image_tokens=16, n_ctx=128, n_threads=1)
        decoder = SequenceDecoder(llm)
        out = []
        for ids in prompts:
            decoder.reset()
            out.append(decoder.tokens(ids, all_logits=True))
        llm.close()
        return np.concatenate(out)

    f32 = export_gguf(parts, tmp_path / "lm-f32.gguf", dtype="f32")
    result = {"f32": next_token_agreement(ref, gguf_logits(f32))}
    for quant, kinds in (("q4_k_m", {"Q4_K", "Q6_K"}), ("q4_0", {"Q4_0", "Q6_K"})):
        path = quantize_gguf(f32, tmp_path / f"lm-{quant}.gguf", quant)
        # Every matrix is quantized (none fell back to a wider type); only the 1-D norms stay float32.
        types = tensor_types(path)
        assert {t for name, t in types.items() if "norm" not in name} == kinds, types
        result[quant] = next_token_agreement(ref, gguf_logits(path))
    print(len(ref), "positions:", result)  # shown with pytest -s
    assert result["f32"]["top1_agreement"] >= 0.98 and result["f32"]["mean_kl"] <= 1e-6, result
    for quant in ("q4_k_m", "q4_0"):
        assert result[quant]["top1_agreement"] >= 0.4 and result[quant]["mean_kl"] <= 0.01, result

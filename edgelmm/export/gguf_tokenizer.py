"""A Hugging Face tokenizer as GGUF vocabulary metadata, so llama.cpp tokenizes exactly as training did.

Byte-level BPE tokenizers (GPT-2 style: edgelmm's own, Qwen2's) become tokenizer.ggml.model "gpt2" with
their merges. The token list is padded to the model's vocabulary size with unused tokens, because
llama.cpp sizes its vocabulary from the list and the embedding matrix must match it.
"""

from __future__ import annotations

import json

from gguf import GGUFWriter, TokenType

from edgelmm.errors import ConfigError


def _byte_level_bpe(tokenizer) -> tuple[dict[str, int], list[str]]:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConfigError("only byte-level BPE tokenizers can be exported to GGUF so far "
                          f"(this one is {model.get('type')} with byte_fallback={model.get('byte_fallback')})")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return model["vocab"], merges


def add_tokenizer(writer: GGUFWriter, tokenizer, vocab_size: int) -> None:
    """Write tokens, types, merges, special token ids and the chat template."""
    vocab, merges = _byte_level_bpe(tokenizer)
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    ids = {**vocab, **{content: tokenizer.convert_tokens_to_ids(content) for content in added}}
    by_id = {i: tok for tok, i in ids.items()}
    if max(by_id) >= vocab_size:
        raise ConfigError(f"tokenizer id {max(by_id)} does not fit the model's vocabulary of {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(token)
            special = token in added and added[token].special
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED if token in added else TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as tokenizers' ByteLevel(use_regex=True)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(False)  # edgelmm's chat templates write the BOS token themselves
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

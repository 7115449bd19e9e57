"""A Hugging Face tokenizer as GGUF vocabulary metadata, so llama.cpp tokenizes as training did.

Two families are supported, told apart by the tokenizer's own JSON:

- Byte-level BPE (GPT-2 style: edgelmm's own, Qwen2's) becomes tokenizer.ggml.model "gpt2" with its
  merges and the llama.cpp pre-tokenizer whose split regex is the tokenizer's: "gpt-2" for ByteLevel's
  built-in regex, "qwen2" for Qwen2's Split regex. Other regexes are refused: llama.cpp would split
  the text differently.
- SentencePiece-style BPE with byte fallback ("▁" for spaces, <0xNN> byte tokens: Llama-2, Mistral,
  Phi-3) becomes "llama" with token scores and types (BYTE, UNKNOWN, CONTROL for special tokens,
  USER_DEFINED for other added tokens). llama.cpp's SPM tokenizer repeatedly merges the adjacent pair
  whose concatenation scores highest, so score = -merge rank reproduces BPE's earliest-merge-first
  order. add_space_prefix is whether the tokenizer writes "▁" before a plain text. llama.cpp writes it
  before every text fragment, also after special tokens and before text that starts with a space, as
  a Prepend("▁") normalizer does (Llama-2's tokenizer.json: identical tokenization). transformers'
  LlamaTokenizer rebuilds this as Metaspace, which does not double a leading space, and with
  prepend_scheme="first" (legacy=False) adds no "▁" after special tokens; there llama.cpp differs (as it
  does for models converted by llama.cpp's own script).

Unigram models are refused: llama.cpp's SPM merging is not Unigram's best-segmentation search (they
disagree on most sentences) and its Unigram tokenizer (UGM) has no byte fallback.

BOS/EOS/UNK/PAD ids, add_bos/add_eos (what the HF tokenizer adds with add_special_tokens=True) and the
chat template are written too. The token list is padded to the model's vocabulary size with unused
tokens, because llama.cpp sizes its vocabulary from the list and the embedding matrix must match it.
"""

from __future__ import annotations

import json
import re

from gguf import GGUFWriter, TokenType

from edgelmm.errors import ConfigError

# Qwen2's pre-tokenizer regex as written in its tokenizer.json (Split, behavior Isolated). Unlike GPT-2's
# it splits digits one by one and lets one punctuation character join the following letters.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Split regex of a byte-level BPE -> llama.cpp pre-tokenizer name. ByteLevel(use_regex=True) alone is
# GPT-2's regex, "gpt-2".
SPLIT_REGEXES = {QWEN2_REGEX: "qwen2"}
SUPPORTED_PRE = "ByteLevel with its GPT-2 regex (gpt-2), or Split with Qwen2's regex + ByteLevel (qwen2)"

SPACE = "\u2581"  # SentencePiece's "▁"
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def _steps(component: dict | None) -> list[dict]:
    """The parts of a normalizer or pre-tokenizer, a Sequence flattened."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        key = "pretokenizers" if "pretokenizers" in component else "normalizers"
        return [step for part in component[key] for step in _steps(part)]
    return [component]


def _byte_level_pre(spec: dict) -> str:
    """The llama.cpp pre-tokenizer name for a byte-level BPE's pre-tokenizer, or a ConfigError."""
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [step["type"] for step in steps]
    # A ByteLevel that adds a prefix space would turn "Hi" into "ĠHi"; llama.cpp's gpt2 model never does.
    if kinds and kinds[-1] == "ByteLevel" and not steps[-1].get("add_prefix_space"):
        if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
            return "gpt-2"
        if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
            split = steps[0]
            name = SPLIT_REGEXES.get(split.get("pattern", {}).get("Regex"))
            if name and split.get("behavior") == "Isolated" and not split.get("invert"):
                return name
    raise ConfigError(f"cannot export this byte-level BPE pre-tokenizer to GGUF "
                      f"({json.dumps(spec.get('pre_tokenizer'))}); supported: {SUPPORTED_PRE}")


def _space_prefix(tokenizer, spec: dict) -> bool:
    """Whether a SentencePiece-style tokenizer writes "▁" before a plain text (llama.cpp's add_space_prefix).

    Only what llama.cpp's SPM tokenizer also does is accepted: spaces to "▁" (Replace or Metaspace) and
    an optional leading "▁" (Prepend or Metaspace's prepend_scheme); a lowercasing or Unicode
    normalizer, say, would be lost.
    """
    kinds = {step["type"] for step in _steps(spec.get("normalizer")) + _steps(spec.get("pre_tokenizer"))}
    text = "a  b\tc\nd"
    backend = tokenizer.backend_tokenizer
    if kinds <= {"Prepend", "Replace", "Metaspace"}:
        out = backend.normalizer.normalize_str(text) if backend.normalizer else text
        if backend.pre_tokenizer:
            out = "".join(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(out))
        escaped = text.replace(" ", SPACE)
        if out in (escaped, SPACE + escaped):
            return out.startswith(SPACE + "a")
    raise ConfigError("cannot export this SentencePiece-style tokenizer to GGUF: llama.cpp only replaces spaces "
                      "with '▁' and optionally prepends one (Prepend/Replace normalizers or a Metaspace "
                      f"pre-tokenizer); this one has {sorted(kinds)}")


def _merge_scores(spec: dict) -> dict[str, int]:
    """token -> -(rank of the first merge that makes it), the order in which BPE applies merges."""
    scores = {}
    for rank, merge in enumerate(spec["model"]["merges"]):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -rank)
    missing = [b for b in BYTE_TOKENS if b not in spec["model"]["vocab"]]
    if missing:
        # llama.cpp falls back to <0xNN> tokens for text its vocabulary cannot cover and fails without them.
        raise ConfigError(f"cannot export this SentencePiece-style tokenizer to GGUF: it lacks {len(missing)} of the "
                          f"256 byte tokens <0x00>..<0xFF> (e.g. {missing[0]}) that llama.cpp's byte fallback needs")
    return scores


def _adds(tokenizer) -> tuple[bool, bool]:
    """(add BOS, add EOS): what the HF tokenizer does to a text with add_special_tokens=True."""
    ids = tokenizer("a").input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bos is not None and ids[:1] == [bos], eos is not None and len(ids) > 1 and ids[-1:] == [eos]


def add_tokenizer(writer: GGUFWriter, tokenizer, vocab_size: int) -> None:
    """Write tokens, types (and scores or merges), special token ids, add_* flags and the chat template."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    byte_level = any(step["type"] == "ByteLevel" for step in _steps(spec.get("pre_tokenizer")))
    if model.get("type") == "BPE" and byte_level and not model.get("byte_fallback"):
        pre, scores = _byte_level_pre(spec), None
    elif model.get("type") == "BPE" and not byte_level and model.get("byte_fallback"):
        space_prefix, scores = _space_prefix(tokenizer, spec), _merge_scores(spec)
    else:
        raise ConfigError(f"cannot export a {model.get('type')} tokenizer (byte_fallback={model.get('byte_fallback')}, "
                          f"ByteLevel pre-tokenizer={byte_level}) to GGUF so that llama.cpp tokenizes alike; "
                          "supported: byte-level BPE (GPT-2, Qwen2) and SentencePiece-style BPE with byte fallback "
                          "(Llama-2, Mistral, Phi-3)")
    vocab = model["vocab"]

    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    ids = {**vocab, **{content: tokenizer.convert_tokens_to_ids(content) for content in added}}
    by_id = {i: tok for tok, i in ids.items()}
    if max(by_id) >= vocab_size:
        raise ConfigError(f"tokenizer id {max(by_id)} does not fit the model's vocabulary of {vocab_size}")
    sentencepiece = scores is not None
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        tokens.append(f"[PAD{i}]" if token is None else token)
        if token is None:
            types.append(TokenType.UNUSED)
        elif sentencepiece and token == tokenizer.unk_token:
            types.append(TokenType.UNKNOWN)
        elif token in added:
            types.append(TokenType.CONTROL if added[token].special else TokenType.USER_DEFINED)
        elif sentencepiece and _BYTE_TOKEN.fullmatch(token):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)

    if not sentencepiece:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        # Characters, bytes and added tokens come from no merge: 0. llama.cpp only compares the scores of
        # the tokens that two adjacent pieces would merge into.
        writer.add_token_scores([float(scores.get(token, 0)) for token in tokens])
        writer.add_token_types(types)
        writer.add_add_space_prefix(space_prefix)
        if tokenizer.unk_token_id is not None:
            writer.add_unk_token_id(tokenizer.unk_token_id)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    # As the HF tokenizer does (edgelmm's own adds nothing: its chat template writes the BOS token itself).
    add_bos, add_eos = _adds(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

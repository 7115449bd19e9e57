"""What a bundle needs to know of a language-model GGUF: architecture, width, context, vocabulary, quant,
and how the model words a conversation (its chat template, BOS, and the tokens that end an answer)."""

from __future__ import annotations

from dataclasses import dataclass

from edgelmm.chat import END_OF_TEXT
from edgelmm.importers.gguf_file import GGUFError, GGUFFile

MMPROJ_ARCH = "clip"  # llama.cpp's architecture name for mmproj files


@dataclass(frozen=True)
class LmFacts:
    architecture: str
    quant: str
    width: int  # embedding_length: what the image embeddings must match
    context_length: int
    vocab_size: int
    chat_template: str | None
    bos: str | None  # the BOS token's text
    add_bos: bool  # whether llama.cpp's tokenizer puts BOS before a prompt
    eos: str | None
    stop: list[str]  # token texts that end an answer


def _quant_name(file_type) -> str:
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(int(file_type)).name
    except (TypeError, ValueError):
        return "unknown"
    return {"ALL_F32": "f32"}.get(name, name.removeprefix("MOSTLY_").lower())


def read_lm(gguf: GGUFFile) -> LmFacts:
    """The facts of the language model in `gguf`; a GGUFError for an mmproj or a file llama.cpp cannot run."""
    from gguf import MODEL_ARCH_NAMES

    arch = gguf.architecture
    if arch == MMPROJ_ARCH:
        raise GGUFError(f"{gguf.path.name} is an mmproj (vision) GGUF, not a language model")
    if arch not in MODEL_ARCH_NAMES.values() or not isinstance(arch, str):
        raise GGUFError(f"{gguf.path.name}: unknown language-model architecture {arch!r}")
    tokens = gguf.get("tokenizer.ggml.tokens")
    if not tokens:
        raise GGUFError(f"{gguf.path.name} has no tokenizer (tokenizer.ggml.tokens)")

    def token(key: str) -> str | None:
        i = gguf.get(key)
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    eos = token("tokenizer.ggml.eos_token_id")
    # llama.cpp ends an answer at EOS, EOT and EOM; edgelmm also at <|endoftext|> (see chat.stop_strings).
    stop = {eos, token("tokenizer.ggml.eot_token_id"), token("tokenizer.ggml.eom_token_id"),
            END_OF_TEXT if END_OF_TEXT in tokens else None}
    # Without the key, llama.cpp adds BOS for SentencePiece vocabularies and not for byte-level BPE.
    add_bos = gguf.get("tokenizer.ggml.add_bos_token", gguf.get("tokenizer.ggml.model") == "llama")
    return LmFacts(architecture=arch, quant=_quant_name(gguf.get("general.file_type")),
                   width=int(gguf.require(f"{arch}.embedding_length")),
                   context_length=int(gguf.require(f"{arch}.context_length")), vocab_size=len(tokens),
                   chat_template=gguf.get("tokenizer.chat_template") or None,
                   bos=token("tokenizer.ggml.bos_token_id"), add_bos=bool(add_bos), eos=eos,
                   stop=sorted(s for s in stop if s))

"""Tokenizers: a byte-level BPE trained from scratch, or a pretrained LM's own, plus `<image>`.

Both carry a Phi-3-style chat template (`<|user|>` / `<|assistant|>` / `<|end|>`, optional system
turn) in the tokenizer config, so `AutoTokenizer` brings it back and `apply_chat_template` renders it.
A message's content is a string (LLaVA data: "<image>\\nWhat is this?") or a list of parts
(`{"type": "image"}`, `{"type": "text", "text": ...}`); both render the same text.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgelmm.chat import IMAGE_PLACEHOLDER

IMAGE_TOKEN = IMAGE_PLACEHOLDER
BOS, EOS, PAD = "<s>", "<|end|>", "<|endoftext|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# `<|endoftext|>` must exist for llama.cpp's phi3 loader; it doubles as the padding token.
SPECIAL_TOKENS = (PAD, BOS, *ROLE_TOKENS, EOS, IMAGE_TOKEN)

CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role ' + message['role']) }}{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' }}{{ render(message['content']) }}{{ '<|end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE (GPT-2 style pre-tokenization) with edgelmm's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    return _wrap(bpe)


def tokenizer_from_json(text: str):
    """Rebuild a tokenizer made by `train_tokenizer` from its `tokenizer.json` text."""
    from tokenizers import Tokenizer

    return _wrap(Tokenizer.from_str(text))


def _wrap(bpe):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  extra_special_tokens=[*ROLE_TOKENS, IMAGE_TOKEN])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def add_image_token(tokenizer):
    """Give a pretrained LM's tokenizer the `<image>` token (and a chat template and pad token if it
    has none). Returns the same tokenizer."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def image_token_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

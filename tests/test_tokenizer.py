import pytest

from edgelmm.tokenizer import CHAT_TEMPLATE, IMAGE_TOKEN, add_image_token, train_tokenizer

CORPUS = ["How many red circles are there? There are two circles.",
          "Is the blue square to the left of the green star? Yes.",
          "Describe the image briefly. A small yellow triangle on a plain light background."] * 40


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


def test_special_tokens_are_single_tokens(tok):
    for token in ("<s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>", IMAGE_TOKEN):
        assert len(tok(token, add_special_tokens=False).input_ids) == 1, token
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "<|end|>", "<|endoftext|>")
    assert len(tok) <= 400


def test_text_round_trips_through_byte_level_bpe(tok):
    text = "Naïve café, 東京 🌍 — 12 spaces   and\nnewlines"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert len(tok("How many red circles", add_special_tokens=False).input_ids) == 4  # learned merges


def test_chat_template_phi3_style(tok):
    messages = [{"role": "user", "content": "<image>\nHow many circles?"}, {"role": "assistant", "content": "2"}]
    assert tok.apply_chat_template(messages, tokenize=False) == \
        "<s><|user|>\n<image>\nHow many circles?<|end|>\n<|assistant|>\n2<|end|>\n"
    with_system = [{"role": "system", "content": "Answer briefly."}] + messages[:1]
    assert tok.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == \
        "<s><|system|>\nAnswer briefly.<|end|>\n<|user|>\n<image>\nHow many circles?<|end|>\n<|assistant|>\n"
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]
    assert tok.apply_chat_template(parts, tokenize=False) == tok.apply_chat_template(messages[:1], tokenize=False)


def test_unknown_role_is_refused(tok):
    with pytest.raises(Exception, match="unknown role"):
        tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_save_and_load_with_auto_tokenizer(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE
    text = "<s><|user|>\n<image>\nIs there a star?<|end|>\n"
    assert loaded(text, add_special_tokens=False).input_ids == tok(text, add_special_tokens=False).input_ids
    assert loaded.convert_tokens_to_ids(IMAGE_TOKEN) == tok.convert_tokens_to_ids(IMAGE_TOKEN)


def test_pretrained_tokenizer_gets_image_token_and_template():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False))
    plain = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    n = len(plain)
    add_image_token(plain)
    assert len(plain) == n + 1 and plain.convert_tokens_to_ids(IMAGE_TOKEN) == n
    assert plain.pad_token == "</s>" and plain.chat_template == CHAT_TEMPLATE
    add_image_token(plain)  # idempotent
    assert len(plain) == n + 1


# A Llama-2-style template: it uses bos_token and eos_token, as many third-party templates do.
LLAMA2_STYLE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
                "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")


@pytest.mark.parametrize("template", [None, LLAMA2_STYLE])
def test_chat_module_renders_as_transformers_does(tok, template):
    """edgelmm.chat renders for training, evaluation, export and the runtime; it must write what the
    tokenizer's own apply_chat_template writes."""
    from edgelmm.chat import ChatFormat

    if template:
        tok = add_image_token(train_tokenizer(["a b c"] * 5, 300))
        tok.chat_template = template
    messages = [{"role": "user", "content": f"{IMAGE_TOKEN}\nWhat is it?"}, {"role": "assistant", "content": "A star."},
                {"role": "user", "content": "And its colour?"}]
    fmt = ChatFormat.from_tokenizer(tok)
    for gen in (False, True):
        assert fmt.render(messages, add_generation_prompt=gen) == \
            tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    assert fmt.render_text([("What is it?", "A star."), ("And its colour?", None)]) == \
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

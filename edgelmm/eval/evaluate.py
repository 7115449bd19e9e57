"""Running a model over short-answer evaluation items (reference: the PyTorch checkpoint)."""

from __future__ import annotations

from pathlib import Path

from edgelmm.chat import ChatFormat
from edgelmm.data.llava import read_records
from edgelmm.errors import DataError
from edgelmm.eval.metrics import score
from edgelmm.imaging import preprocess
from edgelmm.tokenizer import IMAGE_TOKEN


def read_eval_items(path: str | Path, limit: int | None = None) -> list[dict]:
    items = read_records(path)[: limit or None]
    for i, item in enumerate(items):
        problem = _eval_item_problem(item)
        if problem:
            name = item.get("id", i) if isinstance(item, dict) and isinstance(item.get("id", i), (str, int)) else i
            raise DataError(f"eval item {name} in {path}: {problem}")
    return items


def _eval_item_problem(item) -> str | None:
    """What is wrong with one eval item, or None: a question and an answer (text), optionally an image
    (a file name in the image folder), a type and a POPE split (text)."""
    if not isinstance(item, dict):
        return "not an object"
    missing = [k for k in ("question", "answer") if k not in item]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [k for k in ("question", "answer", "image", "type", "pope")
             if k in item and not isinstance(item[k], str) and not (k == "image" and item[k] is None)]
    if wrong:
        return f"{', '.join(wrong)} must be text"
    if not item["question"].strip():
        return "the question is empty"
    return None


def prompt_pieces(parts, question: str, with_image: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of a one-turn chat prompt ending with the assistant header, split where the image goes
    (the second piece is empty without an image). `<image>` is a special token, so splitting the text
    there tokenizes exactly like the whole prompt."""
    tok = parts.tokenizer
    fmt = ChatFormat.from_tokenizer(tok, parts.model.generation_config)
    text = fmt.render_text([(question, None)], with_image=with_image)
    before, _, after = text.partition(fmt.image_placeholder)
    encode = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    return encode(before), encode(after) if after else []


def prompt_ids(parts, question: str, with_image: bool) -> list[int]:
    """The whole prompt, with the image placeholder repeated once per image embedding."""
    before, after = prompt_pieces(parts, question, with_image)
    if not with_image:
        return before
    return before + [parts.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] * parts.num_image_tokens + after


MAX_ANSWER_TOKENS = 16


def answer_batch(parts, questions: list[str], images: list, max_new_tokens: int = MAX_ANSWER_TOKENS) -> list[str]:
    """Greedy answers for a batch of (question, image path or None), left-padded together."""
    import torch

    model, tok = parts.model, parts.tokenizer
    model.eval()
    prompts = [prompt_ids(parts, q, img is not None) for q, img in zip(questions, images)]
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), tok.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, p in enumerate(prompts):
        input_ids[row, longest - len(p):] = torch.tensor(p)
        attention_mask[row, longest - len(p):] = 1
    pixels = [torch.from_numpy(preprocess(img, parts.image_spec)) for img in images if img is not None]
    stop = tok.convert_tokens_to_ids(ChatFormat.from_tokenizer(tok, model.generation_config).stop)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                         pixel_values=torch.stack(pixels) if pixels else None, do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=tok.pad_token_id)
    return [tok.decode(row[longest:], skip_special_tokens=True).strip() for row in out]


def checkpoint_answerer(parts):
    """Answers from a checkpoint in PyTorch, a batch at a time."""
    return lambda questions, images: answer_batch(parts, questions, images)


def runtime_answerer(model):
    """Answers from a loaded runtime model (`edgelmm.load`), one question at a time."""
    return lambda questions, images: [model.ask(image, question, max_tokens=MAX_ANSWER_TOKENS)
                                      for question, image in zip(questions, images)]


def evaluate(answer, items: list[dict], image_folder: str | Path, batch_size: int = 16, progress: bool = True) -> dict:
    """Answer every item greedily with `answer(questions, images)` and score the answers; the report
    includes each prediction."""
    from tqdm import tqdm

    image_folder = Path(image_folder)
    predictions: list[str] = []
    for start in tqdm(range(0, len(items), batch_size), desc="evaluating", disable=not progress):
        batch = items[start:start + batch_size]
        images = [image_folder / it["image"] if it.get("image") else None for it in batch]
        missing = [str(p) for p in images if p is not None and not p.is_file()]
        if missing:
            raise DataError(f"eval images missing: {', '.join(missing[:3])}")
        predictions.extend(answer([it["question"] for it in batch], images))
    report = score(items, predictions)
    report["predictions"] = [{"id": it.get("id"), "type": it.get("type"), "answer": it["answer"], "prediction": p}
                             for it, p in zip(items, predictions)]
    return report

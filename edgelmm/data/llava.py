"""LLaVA-format data: a Dataset and a collator for training.

Reads LLaVA's JSON (or JSONL) records, `{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"system",
"value"}...]}`, with images relative to an image folder: EdgeScenes output as well as real LLaVA data
(LCS-558K, llava_v1_5_mix665k, text-only records included). Each sample is rendered with the tokenizer's
chat template, its `<image>` expanded to the projector's token count, and labelled only on the
assistant's replies (everything else is -100).

Records are checked when the data set is opened, so a broken record fails before training starts with
an error naming it; with `skip_bad=True` it is skipped and counted instead.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgelmm.chat import ChatFormat
from edgelmm.errors import DataError, UserError
from edgelmm.fsutil import open_regular
from edgelmm.imaging import ImageSpec, preprocess
from edgelmm.tokenizer import IMAGE_TOKEN

IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def read_records(path: str | Path) -> list[dict]:
    """Records from a JSON list or a JSONL file."""
    path = Path(path)
    try:
        with open_regular(path, "data file") as f:
            text = f.read().decode("utf-8")
    except UserError as e:
        raise DataError(str(e)) from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(records, list):
        raise DataError(f"{path} must hold a list of records")
    return records


def record_problem(record, image_folder: Path) -> str | None:
    """Why a record cannot be used, or None when it is fine."""
    if not isinstance(record, dict):
        return "not an object"
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "no conversations"
    for turn in conv:
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            return "malformed turn (needs 'from' in human/gpt/system and a string 'value')"
    speakers = [t["from"] for t in conv if t["from"] != "system"]
    if any(t["from"] == "system" for t in conv[1:]):
        return "a system turn after the first turn"
    if not speakers or speakers[0] != "human" or speakers[-1] != "gpt" or \
            any(a == b for a, b in zip(speakers, speakers[1:])):
        return "turns must alternate human/gpt, starting with human and ending with gpt"
    tags = sum(t["value"].count(IMAGE_TOKEN) for t in conv)
    image = record.get("image")
    if image is None:
        return f"{IMAGE_TOKEN} tag without an image" if tags else None
    if not isinstance(image, str):
        return "only one image per record is supported"
    if tags != 1:
        return f"an image needs exactly one {IMAGE_TOKEN} tag, found {tags}"
    if not (image_folder / image).is_file():
        return f"image file missing: {image_folder / image}"
    return None


def _record_id(record, index: int) -> str:
    return str(record.get("id", f"#{index}")) if isinstance(record, dict) else f"#{index}"


@dataclass
class LlavaDataset(torch.utils.data.Dataset):
    """LLaVA-format records ready for `LlavaCollator` (see the module docstring)."""

    json_path: str | Path
    image_folder: str | Path
    tokenizer: object
    image_spec: ImageSpec
    num_image_tokens: int
    max_length: int = 2048
    skip_bad: bool = False
    skipped: Counter = field(default_factory=Counter, init=False)  # reason -> records skipped

    def __post_init__(self) -> None:
        self.image_folder = Path(self.image_folder)
        if not self.image_folder.is_dir():
            raise DataError(f"image folder not found: {self.image_folder}")
        self.records = []
        for i, record in enumerate(read_records(self.json_path)):
            problem = record_problem(record, self.image_folder)
            if problem is None:
                self.records.append(record)
            elif self.skip_bad:
                self.skipped[problem.split(":")[0]] += 1
            else:
                raise DataError(f"record {_record_id(record, i)} in {self.json_path}: {problem} "
                                "(skip bad records with the skip option)")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        rid = _record_id(record, i)
        input_ids, labels = tokenize_conversation(self.tokenizer, record["conversations"], rid)
        if "image" in record:
            input_ids, labels = expand_image_token(input_ids, labels, self.image_token_id, self.num_image_tokens)
        if len(input_ids) > self.max_length:
            if self.image_token_id in input_ids[self.max_length:]:
                raise DataError(f"record {rid}: longer than {self.max_length} tokens and the image would be cut")
            input_ids, labels = input_ids[:self.max_length], labels[:self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            raise DataError(f"record {rid}: no answer tokens left within {self.max_length} tokens")
        sample = {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels)}
        if "image" in record:
            try:
                pixels = preprocess(self.image_folder / record["image"], self.image_spec)
            except Exception as e:  # decoding errors come in many types; name the record
                raise DataError(f"record {rid}: {e}") from None
            sample["pixel_values"] = torch.from_numpy(pixels)
        return sample


def tokenize_conversation(tokenizer, conversations: list[dict], rid: str = "?") -> tuple[list[int], list[int]]:
    """Token ids of the chat-templated conversation and labels that keep only the assistant's replies.

    The template is rendered once per reply to find where each reply starts and ends in the text; the
    tokens whose characters fall inside a reply (its closing end-of-turn token included) are labelled.
    """
    messages = [{"role": ROLES[t["from"]], "content": t["value"]} for t in conversations]
    render = ChatFormat.from_tokenizer(tokenizer).render
    text = render(messages)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:k], add_generation_prompt=True), render(messages[:k + 1]).rstrip()
        if not (text.startswith(before) and text.startswith(through)):
            raise DataError(f"record {rid}: the chat template does not render turns as prefixes")
        spans.append((len(before), len(through)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [tok if any(s <= a and b <= e for s, e in spans) else IGNORE_INDEX
              for tok, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]
    return list(enc["input_ids"]), labels


def expand_image_token(input_ids: list[int], labels: list[int], image_token_id: int, n: int) -> tuple[list[int], list[int]]:
    """Replace the single `<image>` token with the `n` placeholders the projector's outputs fill."""
    k = input_ids.index(image_token_id)
    return (input_ids[:k] + [image_token_id] * n + input_ids[k + 1:],
            labels[:k] + [IGNORE_INDEX] * n + labels[k + 1:])


@dataclass
class LlavaCollator:
    """Pads a list of samples into a batch (right padding; labels only when the samples have them);
    images of the batch are stacked in order of appearance."""

    pad_token_id: int

    def __call__(self, samples: list[dict]) -> dict:
        longest = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, s in enumerate(samples):
            input_ids[row, :len(s["input_ids"])], attention_mask[row, :len(s["input_ids"])] = s["input_ids"], 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "labels" in samples[0]:
            batch["labels"] = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
            for row, s in enumerate(samples):
                batch["labels"][row, :len(s["labels"])] = s["labels"]
        pixels = [s["pixel_values"] for s in samples if "pixel_values" in s]
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)  # (B_images, 3, H, W)
        return batch

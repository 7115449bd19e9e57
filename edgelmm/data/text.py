"""Text-only views of LLaVA-format data: causal-LM pretraining samples and tokenizer training text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgelmm.chat import ChatFormat
from edgelmm.data.llava import ROLES, read_records
from edgelmm.tokenizer import IMAGE_TOKEN


def conversation_text(record: dict) -> list[dict]:
    """A record's turns as chat messages, with the `<image>` tag taken out."""
    return [{"role": ROLES[t["from"]], "content": t["value"].replace(IMAGE_TOKEN, "").strip()}
            for t in record["conversations"]]


def corpus(paths) -> list[str]:
    """Every turn of every record in these LLaVA-format files, for training a tokenizer."""
    return [m["content"] for path in paths for r in read_records(path) for m in conversation_text(r)]


@dataclass
class ChatTextDataset(torch.utils.data.Dataset):
    """Chat-templated conversations for language-model pretraining; every token is a target."""

    records: list[dict]
    tokenizer: object
    max_length: int = 2048

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        text = ChatFormat.from_tokenizer(self.tokenizer).render(conversation_text(self.records[i]))
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids[:self.max_length])
        return {"input_ids": ids, "labels": ids.clone()}

"""Stage `clip`: CLIP-style contrastive pretraining of a from-scratch vision tower.

The tower learns beside a small text encoder on image-caption pairs: both are projected to a shared
space and trained with the symmetric InfoNCE loss with a learned temperature (CLIP). Afterwards a
zero-shot classifier built from label prompts ("a photo of a {color} {shape}") checks what the tower
learned on held-out images. Only the tower moves on into the LLaVA model.

Optionally (`position_loss`), each patch of the layer the language model reads must also name its own
row and column. Contrastive captions never ask where anything is, so a tower trained on them alone
lets its position embeddings fade from that layer, and a language model reading the patches cannot
tell left from right. And optionally (`dense_loss`), each patch of that layer must name the object it
lies on (its region's phrase) or none: a language model that finds "the red star" by attention then
lands on the star's own patches, so what it reads there (where they are) is where the star is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgelmm.data.llava import LlavaCollator, read_records, record_problem
from edgelmm.errors import DataError
from edgelmm.imaging import ImageSpec, preprocess

MAX_CAPTION_TOKENS = 64


class ContrastivePair(nn.Module):
    """A vision tower and a text encoder trained to agree (CLIP)."""

    def __init__(self, vision_tower: nn.Module, vocab_size: int, pad_token_id: int, embed_dim: int = 128,
                 text_width: int = 128, text_layers: int = 2, feature_layer: int = -2,
                 position_loss: float = 0.0, dense_loss: float = 0.0, dense_classes: int = 0) -> None:
        from transformers import CLIPTextConfig, CLIPTextModel

        super().__init__()
        self.vision = vision_tower
        self.text = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=text_width, intermediate_size=4 * text_width,
            num_hidden_layers=text_layers, num_attention_heads=max(text_width // 64, 1),
            max_position_embeddings=MAX_CAPTION_TOKENS, pad_token_id=pad_token_id, bos_token_id=pad_token_id,
            eos_token_id=pad_token_id))  # pooling is a masked mean, so these ids only need to be valid
        self.visual_projection = nn.Linear(vision_tower.config.hidden_size, embed_dim, bias=False)
        self.region_projection = nn.Linear(vision_tower.config.hidden_size, embed_dim, bias=False)
        self.feature_layer = feature_layer  # the layer whose patch features the language model will read
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        config = vision_tower.config
        self.grid = config.image_size // config.patch_size
        self.position_loss = position_loss
        # Row and column logits per patch; a linear read-out, as the projector's first layer is linear.
        self.position_head = nn.Linear(config.hidden_size, 2 * self.grid) if position_loss else None
        self.dense_loss = dense_loss
        # Per patch: none (0) or the phrase of the object under it (1...), also a linear read-out.
        self.dense_head = nn.Linear(config.hidden_size, dense_classes + 1) if dense_loss else None

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, E)
        return self._embed_images(pixel_values)[0]

    def _embed_images(self, pixel_values):
        """Image embeddings (CLS after the final norm) and the patch features of the feature layer."""
        out = self.vision(pixel_values=pixel_values, output_hidden_states=True)
        patches = out.hidden_states[self.feature_layer][:, 1:]  # (B, P, D), CLS dropped
        return F.normalize(self.visual_projection(out.pooler_output), dim=-1), patches

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean over the caption's tokens
        return F.normalize(self.text_projection(pooled), dim=-1)

    def forward(self, pixel_values, input_ids, attention_mask, negative_ids=None, negative_mask=None,
                region_masks=None, region_image=None, region_phrase=None, phrase_ids=None, phrase_mask=None,
                patch_labels=None):
        img, patches = self._embed_images(pixel_values)
        txt = self.embed_texts(input_ids, attention_mask)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()  # CLIP keeps logits at most 100
        logits = scale * img @ txt.T  # (B, B)
        target = torch.arange(len(img), device=img.device)
        text_loss = F.cross_entropy(logits.T, target)
        if negative_ids is not None:  # each image also faces its own hard negative captions (NegCLIP)
            neg = self.embed_texts(negative_ids, negative_mask).view(len(img), -1, txt.shape[-1])  # (B, K, E)
            logits = torch.cat([logits, scale * torch.einsum("be,bke->bk", img, neg)], dim=1)  # (B, B + K)
        loss = (F.cross_entropy(logits, target) + text_loss) / 2
        if region_masks is not None:
            # Region-phrase contrast: the patches inside each object's box, pooled, must pick that
            # object's phrase among the batch's phrases. This trains the patch features themselves,
            # which are what the projector hands to the language model.
            weights = region_masks / region_masks.sum(-1, keepdim=True)  # (R, P)
            regions = torch.einsum("rp,rpd->rd", weights, patches[region_image])
            regions = F.normalize(self.region_projection(regions), dim=-1)  # (R, E)
            phrases = self.embed_texts(phrase_ids, phrase_mask)  # (U, E)
            loss = (loss + F.cross_entropy(scale * regions @ phrases.T, region_phrase)) / 2
        if self.position_head is not None:
            loss = loss + self.position_loss * self.patch_position_loss(patches)
        if self.dense_head is not None and patch_labels is not None:
            named = self.dense_head(patches)  # (B, P, classes)
            loss = loss + self.dense_loss * F.cross_entropy(named.flatten(0, 1), patch_labels.flatten())
        return {"loss": loss, "logits": logits}

    def patch_position_loss(self, patches: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each patch naming its own row and column (patches are row-major)."""
        logits = self.position_head(patches).view(-1, self.grid)  # (B * P * 2, grid): row, column, ...
        index = torch.arange(self.grid * self.grid, device=patches.device)
        truth = torch.stack([index // self.grid, index % self.grid], dim=-1)  # (P, 2)
        return F.cross_entropy(logits, truth.repeat(len(patches), 1).flatten())


class CaptionCollator(LlavaCollator):
    """Pads captions like `LlavaCollator` and, when samples carry them, their hard negatives and their
    regions (patch masks, with each distinct phrase of the batch embedded once)."""

    def __call__(self, samples: list[dict]) -> dict:
        batch = super().__call__(samples)
        if "negative_ids" in samples[0]:
            negatives = super().__call__([{"input_ids": ids} for s in samples for ids in s["negative_ids"]])
            batch["negative_ids"], batch["negative_mask"] = negatives["input_ids"], negatives["attention_mask"]
        if "region_masks" in samples[0]:
            phrases: dict[tuple, int] = {}
            region_phrase = [phrases.setdefault(tuple(ids.tolist()), len(phrases))
                             for s in samples for ids in s["region_ids"]]
            padded = super().__call__([{"input_ids": torch.tensor(ids)} for ids in phrases])
            batch.update(region_masks=torch.cat([s["region_masks"] for s in samples]),
                         region_image=torch.tensor([i for i, s in enumerate(samples) for _ in s["region_ids"]]),
                         region_phrase=torch.tensor(region_phrase), phrase_ids=padded["input_ids"],
                         phrase_mask=padded["attention_mask"])
        if "patch_labels" in samples[0]:
            batch["patch_labels"] = torch.stack([s["patch_labels"] for s in samples])
        return batch


def box_mask(box, grid: int) -> torch.Tensor:
    """(grid * grid,) mask of the patches whose centres lie in `box` (x0, y0, x1, y1 in fractions of a
    square image, row-major like the tower's patches); a box too small for any centre gets the patch
    under its own centre."""
    x0, y0, x1, y1 = box
    centres = (torch.arange(grid) + 0.5) / grid
    cols = (centres >= x0) & (centres <= x1)
    rows = (centres >= y0) & (centres <= y1)
    mask = (rows[:, None] & cols[None, :]).float()
    if not mask.any():
        col, row = (min(int((x0 + x1) / 2 * grid), grid - 1), min(int((y0 + y1) / 2 * grid), grid - 1))
        mask[row, col] = 1.0
    return mask.flatten()


def patch_labels(regions: list[dict], phrases: tuple[str, ...], grid: int) -> torch.Tensor:
    """(grid * grid,) class of each patch: 0 for none, else 1 + the index in `phrases` of the region it
    lies in; where regions overlap, the later one (drawn on top) names the patch."""
    labels = torch.zeros(grid * grid, dtype=torch.long)
    for g in regions:
        labels[box_mask(g["box"], grid).bool()] = 1 + phrases.index(g["phrase"])
    return labels


@dataclass
class CaptionPairs(torch.utils.data.Dataset):
    """(image, caption) pairs from a LLaVA caption file (stage1.json): the first reply is the caption.

    A record may also list hard negative captions under "negatives" (every record then the same number)
    and its objects under "regions": [{"box": [x0, y0, x1, y1] in fractions of the image, "phrase"}].
    Boxes are read on the image as the tower sees it, so they suit square images."""

    records: list[dict]
    image_folder: Path
    tokenizer: object
    image_spec: ImageSpec
    grid: int = 0  # patches per side of the tower; 0 leaves regions out
    phrases: tuple[str, ...] = ()  # the region phrases patches name (dense labels); empty: none

    @classmethod
    def from_file(cls, json_path, image_folder, tokenizer, image_spec, grid: int = 0):
        records = read_records(json_path)
        for i, r in enumerate(records):
            problem = record_problem(r, Path(image_folder))
            if problem or "image" not in r:
                raise DataError(f"record {r.get('id', i) if isinstance(r, dict) else i} in {json_path}: "
                                f"{problem or 'no image'}")
        return cls(records, Path(image_folder), tokenizer, image_spec, grid)

    def region_phrases(self) -> tuple[str, ...]:
        """Every region phrase of the records, in a fixed order: the classes of the dense labels."""
        return tuple(sorted({g["phrase"] for r in self.records for g in r.get("regions") or []}))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        caption = next(t["value"] for t in r["conversations"] if t["from"] == "gpt")
        sample = {"pixel_values": torch.from_numpy(preprocess(self.image_folder / r["image"], self.image_spec)),
                  "input_ids": self._ids(caption)}
        if r.get("negatives"):  # captions of slightly different scenes (EdgeScenes writes three)
            sample["negative_ids"] = [self._ids(text) for text in r["negatives"]]
        if r.get("regions") and self.grid:  # objects' phrases and boxes (EdgeScenes writes them)
            sample["region_masks"] = torch.stack([box_mask(g["box"], self.grid) for g in r["regions"]])
            sample["region_ids"] = [self._ids(g["phrase"]) for g in r["regions"]]
            if self.phrases:
                sample["patch_labels"] = patch_labels(r["regions"], self.phrases, self.grid)
        return sample

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids[:MAX_CAPTION_TOKENS])


@torch.no_grad()
def zero_shot_accuracy(pair: ContrastivePair, tokenizer, labels: list[str], images: list[torch.Tensor],
                       truths: list[set[str]], template: str = "a photo of a {}") -> float:
    """Classify each image as the label whose prompt embeds closest; correct when the label is one of
    the image's true labels."""
    if not images:
        return float("nan")
    pair.eval()
    prompts = [template.format(label) for label in labels]
    batch = LlavaCollator(tokenizer.pad_token_id)(
        [{"input_ids": torch.tensor(tokenizer(p, add_special_tokens=False).input_ids)} for p in prompts])
    classifier = pair.embed_texts(batch["input_ids"], batch["attention_mask"])  # (C, E)
    correct = 0
    for start in range(0, len(images), 64):
        chunk = torch.stack(images[start:start + 64])
        predicted = (pair.embed_images(chunk) @ classifier.T).argmax(-1)  # (B,)
        correct += sum(labels[p] in truth for p, truth in zip(predicted.tolist(), truths[start:start + 64]))
    return correct / len(images)

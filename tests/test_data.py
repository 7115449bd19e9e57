"""The LLaVA-format data set and collator, on EdgeScenes output and hand-written records."""

import json

import pytest
import torch

from edgelmm.data.llava import IGNORE_INDEX, LlavaCollator, LlavaDataset
from edgelmm.errors import DataError


def dataset(parts, json_path, image_folder, **kw):
    return LlavaDataset(json_path, image_folder, parts.tokenizer, parts.image_spec, parts.num_image_tokens, **kw)


def labelled_text(tok, sample):
    """The labelled tokens, decoded run by run."""
    runs, current = [], []
    for tid, label in zip(sample["input_ids"].tolist(), sample["labels"].tolist()):
        if label != IGNORE_INDEX:
            assert label == tid
            current.append(tid)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def test_labels_cover_exactly_the_assistant_replies(tiny, scenes_dir):
    ds = dataset(tiny, scenes_dir / "stage2.json", scenes_dir / "images")
    records = json.loads((scenes_dir / "stage2.json").read_text())
    for i in range(6):
        sample = ds[i]
        replies = [t["value"] + "<|end|>" for t in records[i]["conversations"] if t["from"] == "gpt"]
        assert labelled_text(tiny.tokenizer, sample) == replies
        image_id = tiny.model.config.image_token_id
        assert (sample["input_ids"] == image_id).sum() == tiny.num_image_tokens
        assert sample["pixel_values"].shape == (3, 32, 32)


def test_collator_pads_and_a_batch_trains(tiny, scenes_dir):
    ds = dataset(tiny, scenes_dir / "stage1.json", scenes_dir / "images")
    batch = LlavaCollator(tiny.tokenizer.pad_token_id)([ds[0], ds[1], ds[2]])
    lengths = [len(ds[i]["input_ids"]) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    out = tiny.model(**batch)
    assert torch.isfinite(out.loss)


def write(tmp_path, records, name="data.json"):
    (tmp_path / "img").mkdir(exist_ok=True)
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def good_record(rid="ok", image="a.png"):
    return {"id": rid, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a red circle"}]}


@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (50, 40), (220, 38, 38)).save(tmp_path / "img" / "a.png")
    return tmp_path / "img"


BAD_RECORDS = {
    "missing image file": (good_record("r1", image="nope.png"), "image file missing"),
    "tag without image": ({"id": "r2", "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                          {"from": "gpt", "value": "Hello"}]}, "without an image"),
    "image without tag": ({"id": "r3", "image": "a.png", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, "exactly one <image>"),
    "malformed turn": ({"id": "r4", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "malformed"),
    "not alternating": ({"id": "r5", "conversations": [{"from": "human", "value": "a"},
                                                       {"from": "human", "value": "b"}]}, "alternate"),
    "no conversations": ({"id": "r6", "image": "a.png"}, "no conversations"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_is_named_or_skipped(case, tiny, tmp_path, image_dir):
    bad, message = BAD_RECORDS[case]
    path = write(tmp_path, [good_record(), bad])
    with pytest.raises(DataError, match=f"record {bad['id']} .*{message}"):
        dataset(tiny, path, image_dir)
    ds = dataset(tiny, path, image_dir, skip_bad=True)
    assert len(ds) == 1 and sum(ds.skipped.values()) == 1


def test_text_only_and_system_records_from_jsonl(tiny, tmp_path, image_dir):
    text_only = {"id": "t", "conversations": [{"from": "system", "value": "Be brief."},
                                              {"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]}
    path = write(tmp_path, [text_only, good_record()], "mix.jsonl")
    ds = dataset(tiny, path, image_dir)
    sample = ds[0]
    assert "pixel_values" not in sample and labelled_text(tiny.tokenizer, sample) == ["hi<|end|>"]
    batch = LlavaCollator(tiny.tokenizer.pad_token_id)([ds[0], ds[1]])
    assert batch["pixel_values"].shape[0] == 1  # only the record with an image contributes pixels
    assert torch.isfinite(tiny.model(**batch).loss)


def test_missing_files_and_overlong_records(tiny, tmp_path, image_dir):
    with pytest.raises(DataError, match="data file not found"):
        dataset(tiny, tmp_path / "missing.json", image_dir)
    with pytest.raises(DataError, match="image folder not found"):
        dataset(tiny, write(tmp_path, [good_record()]), tmp_path / "no_images")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        dataset(tiny, tmp_path / "broken.json", image_dir)
    ds = dataset(tiny, write(tmp_path, [good_record()]), image_dir, max_length=8)
    with pytest.raises(DataError, match="record ok: .*image would be cut"):
        ds[0]


def test_undecodable_image_names_the_record(tiny, tmp_path, image_dir):
    (image_dir / "a.png").write_bytes(b"garbage")
    ds = dataset(tiny, write(tmp_path, [good_record()]), image_dir)
    with pytest.raises(DataError, match="record ok: cannot read"):
        ds[0]

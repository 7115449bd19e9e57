"""Every invariant of the EdgeScenes world, checked on generated files (not on generator internals)."""

import hashlib
import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from edgelmm.data.edgescenes import synthesize
from edgelmm.data.edgescenes.language import SHORT_ANSWER_SUFFIX

COLORS = {"red": (220, 38, 38), "orange": (249, 115, 22), "yellow": (234, 179, 8), "green": (22, 163, 74),
          "blue": (37, 99, 235), "purple": (147, 51, 234), "black": (30, 30, 30)}
SHAPES = ("circle", "square", "triangle", "star")


def load(d, name):
    return json.loads((d / name).read_text())


@pytest.fixture(scope="module")
def scenes(scenes_dir):
    return {s["image"]: s for s in load(scenes_dir, "scenes.json")["images"]}


def test_outputs_exist(scenes_dir):
    for name in ("scenes.json", "stage1.json", "stage2.json", "eval.json"):
        assert load(scenes_dir, name)
    assert len(list((scenes_dir / "images").glob("*.png"))) == 120


def test_same_seed_same_files_and_different_seeds_disjoint(tmp_path, scenes_dir):
    a = synthesize(tmp_path / "a", 12, seed=0, workers=1, progress=False)
    for name in ("scenes.json", "stage1.json", "stage2.json", "eval.json"):
        # The first 12 images of seed 0 do not depend on how many images follow, except for POPE's
        # data-set-wide popular split; the images and scenes are identical.
        if name == "scenes.json":
            assert load(a, name)["images"] == load(scenes_dir, name)["images"][:12]
    for p in (a / "images").iterdir():
        assert p.read_bytes() == (scenes_dir / "images" / p.name).read_bytes()
    again = synthesize(tmp_path / "again", 12, seed=0, workers=2, progress=False)
    for name in ("scenes.json", "stage1.json", "stage2.json", "eval.json"):
        assert (a / name).read_bytes() == (again / name).read_bytes()
    other = synthesize(tmp_path / "other", 12, seed=1, workers=1, progress=False)
    digests = lambda d: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (d / "images").iterdir()}  # noqa: E731
    assert not digests(a) & digests(other)
    assert not {p.name for p in (a / "images").iterdir()} & {p.name for p in (other / "images").iterdir()}


def test_scene_invariants(scenes, scenes_dir):
    counts = Counter()
    for name, scene in scenes.items():
        img = np.asarray(Image.open(scenes_dir / "images" / name))
        assert img.shape == (224, 224, 3)
        objs = scene["objects"]
        assert 1 <= len(objs) <= 6
        bg = scene["background"]
        assert bg["kind"] in ("solid", "gradient", "noise")
        assert all(200 <= c <= 250 for color in bg["colors"] for c in color)
        free = np.ones((224, 224), bool)
        for o in objs:
            counts[o["shape"]] += 1
            assert o["shape"] in SHAPES and o["color"] in COLORS
            assert all(abs(a - b) <= 15 for a, b in zip(o["rgb"], COLORS[o["color"]]))
            x0, y0, x1, y1 = o["bbox"]
            assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
            side = max(x1 - x0, y1 - y0)
            lo, hi = {"small": (28, 40), "large": (48, 64)}[o["size"]]
            assert lo - 0.01 <= side <= hi + 0.01
            cx, cy = (int(v) for v in o["center"])
            assert np.abs(img[cy, cx].astype(int) - o["rgb"]).max() <= 2  # the object is drawn in its colour
            free[max(int(y0) - 1, 0):int(y1) + 2, max(int(x0) - 1, 0):int(x1) + 2] = False
        assert img[free].min() >= 200 and img[free].max() <= 250  # background stays light
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                ax0, ay0, ax1, ay1 = a["bbox"]
                bx0, by0, bx1, by1 = b["bbox"]
                gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
                assert gap >= 4 - 1e-6
    assert set(counts) == set(SHAPES)


def _count(objs, key, value):
    return sum(o[key] == value for o in objs)


def check_answer(question, answer, objs):
    """Recompute the answer of an EdgeScenes question from the scene alone."""
    q = question.removesuffix(SHORT_ANSWER_SUFFIX)
    if q == "How many objects are there?":
        return answer == str(len(objs))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", q):
        return answer == str(_count(objs, "color", m[1]))
    if m := re.fullmatch(r"How many (\w+)s are there\?", q):
        return answer == str(_count(objs, "shape", m[1]))
    if m := re.fullmatch(r"What color is the (\w+)\?", q):
        hits = [o for o in objs if o["shape"] == m[1]]
        return len(hits) == 1 and answer == hits[0]["color"]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", q):
        hits = [o for o in objs if o["color"] == m[1]]
        return len(hits) == 1 and answer == hits[0]["shape"]
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", q):
        present = any((o["color"], o["shape"]) == (m[1], m[2]) for o in objs)
        return answer == ("yes" if present else "no")
    if m := re.fullmatch(r"Is the (\w+) (\w+) (to the left of|above) the (\w+) (\w+)\?", q):
        a = [o for o in objs if (o["color"], o["shape"]) == (m[1], m[2])]
        b = [o for o in objs if (o["color"], o["shape"]) == (m[4], m[5])]
        assert len(a) == 1 and len(b) == 1, "relations only between unique objects"
        k = 0 if m[3] == "to the left of" else 1
        assert abs(a[0]["center"][k] - b[0]["center"][k]) >= 20, "relation margin"
        return answer == ("yes" if a[0]["center"][k] < b[0]["center"][k] else "no")
    raise AssertionError(f"unexpected question {q!r}")


def test_eval_items_are_right_and_balanced(scenes, scenes_dir):
    items = load(scenes_dir, "eval.json")
    assert {tuple(sorted(i)) for i in items} <= {("answer", "id", "image", "question", "type"),
                                                 ("answer", "id", "image", "pope", "question", "type")}
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        assert item["question"].endswith(SHORT_ANSWER_SUFFIX)
        assert re.fullmatch(r"[a-z0-9]+", item["answer"])
        assert check_answer(item["question"], item["answer"], scenes[item["image"]]["objects"]), item
    types = Counter(i["type"] for i in items)
    assert set(types) == {"count", "color", "shape", "exist", "relation"}
    exist = Counter(i["answer"] for i in items if i["type"] == "exist")
    assert abs(exist["yes"] - exist["no"]) <= 1
    assert {i["pope"] for i in items if i["answer"] == "no" and i["type"] == "exist"} == {"random", "popular", "adversarial"}
    counts = {i["answer"] for i in items if i["type"] == "count"}
    assert counts <= set("0123456") and "0" in counts


def test_stage1_is_llava_caption_pairs(scenes, scenes_dir):
    records = load(scenes_dir, "stage1.json")
    assert len(records) == len(scenes)
    instructions = set()
    for r in records:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].count("<image>") == 1
        instructions.add(human["value"].replace("<image>", "").strip())
        for o in scenes[r["image"]]["objects"]:  # the caption names every object
            assert f"{o['color']} {o['shape']}" in gpt["value"]
    assert len(instructions) >= 8


def test_stage1_negatives_change_one_detail_and_regions_box_each_object(scenes, scenes_dir):
    words = re.compile(r"(small|large) (" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + ")")
    for r in load(scenes_dir, "stage1.json"):
        caption = r["conversations"][1]["value"]
        objects = words.findall(caption)
        assert len(r["negatives"]) == 3
        for negative, changed in zip(r["negatives"], (2, 2, 1)):  # shape, shapes swapped, colour
            other = words.findall(negative)
            assert words.sub("", negative) == words.sub("", caption)  # worded the same way
            assert len(other) == len(objects) and other != objects
            for part in range(3):  # only the changed part of (size, colour, shape) differs
                assert ([o[part] for o in other] == [o[part] for o in objects]) == (part != changed)
        scene = scenes[r["image"]]
        assert [g["phrase"] for g in r["regions"]] == [f"{o['size']} {o['color']} {o['shape']}" for o in scene["objects"]]
        for g, o in zip(r["regions"], scene["objects"]):
            assert g["box"] == pytest.approx([v / 224 for v in o["bbox"]], abs=1e-4)
            assert 0 <= g["box"][0] < g["box"][2] <= 1 and 0 <= g["box"][1] < g["box"][3] <= 1


def test_stage2_mixes_llava_instruct_kinds(scenes, scenes_dir):
    records = load(scenes_dir, "stage2.json")
    kinds = Counter(r["id"].rsplit("-", 1)[1] for r in records)
    assert set(kinds) == {"conversation", "detail", "reasoning", "vqa"}
    for r in records:
        conv = r["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert sum(t["value"].count("<image>") for t in conv) == 1 and "<image>" in conv[0]["value"]
        if r["id"].endswith("-vqa"):
            for q, a in zip(conv[::2], conv[1::2]):
                question = q["value"].replace("<image>", "").strip()
                assert check_answer(question, a["value"], scenes[r["image"]]["objects"])
        if r["id"].endswith("-conversation"):
            assert len(conv) >= 4  # multi-turn
    reasoning = [r["conversations"][1]["value"] for r in records if r["id"].endswith("-reasoning")]
    assert all(len(text.split(". ")) >= 2 for text in reasoning)  # several steps, not one word


def test_free_form_counts_and_existence_are_right_and_not_lopsided(scenes, scenes_dir):
    numbers = {w: n for n, w in enumerate(("no", "one", "two", "three", "four", "five", "six"))}
    counts, exists = [], []
    for r in load(scenes_dir, "stage2.json"):
        if not r["id"].endswith("-conversation"):
            continue
        objs = scenes[r["image"]]["objects"]
        conv = r["conversations"]
        for q, a in zip(conv[::2], conv[1::2]):
            question = q["value"].replace("<image>", "").strip()
            if m := re.fullmatch(r"(?:How many (\w+)s (?:are there|are in the picture|can you see)\?"
                                 r"|Count the (\w+)s in the image\.)", question):
                n = re.match(r"There (?:is|are) (\w+) ", a["value"])[1]
                assert numbers[n] == _count(objs, "shape", m[1] or m[2]), (question, a["value"])
                counts.append(numbers[n])
            if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question):
                present = any((o["color"], o["shape"]) == (m[1], m[2]) for o in objs)
                assert a["value"].startswith("Yes" if present else "No"), (question, a["value"])
                exists.append(present)
    # Asked about any shape or any colour-shape pair, most answers would be "no".
    assert 0 < sum(n == 0 for n in counts) < len(counts) / 2
    assert 0.3 < sum(exists) / len(exists) < 0.7

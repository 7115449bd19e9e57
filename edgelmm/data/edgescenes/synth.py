"""Writing an EdgeScenes data set: images, scenes.json, stage1.json, stage2.json and eval.json.

Every image has its own random stream derived from (seed, index), so the output does not depend on
the number of worker processes, and a seed always gives the same files. The data set is written under
a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from edgelmm.data.edgescenes import language as lang
from edgelmm.data.edgescenes.render import render_scene
from edgelmm.data.edgescenes.world import CANVAS, Scene, sample_scene
from edgelmm.errors import UserError
from edgelmm.fsutil import atomic_output_dir
from edgelmm.workers import die_with_parent

_SCENE, _TEXT, _NEGATIVES = 0, 1, 2  # sub-streams of each image's random generator


def image_name(seed: int, index: int) -> str:
    return f"es{seed}_{index:06d}.png"


def sample_scenes(n_images: int, seed: int) -> list[Scene]:
    return [sample_scene(np.random.default_rng([seed, i, _SCENE]), image_name(seed, i)[:-4], image_name(seed, i))
            for i in range(n_images)]


def popular_combos(scenes: list[Scene]) -> list[tuple[str, str]]:
    """(colour, shape) pairs from most to least frequent in the data set (POPE's popular split)."""
    counts = Counter((o.color, o.shape) for s in scenes for o in s.objects)
    return [combo for combo, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _human_first(question: str, rng: np.random.Generator) -> str:
    # LLaVA places the image before or after the first question.
    return f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"


def _record(rid: str, image: str, turns: list[tuple[str, str]], rng: np.random.Generator) -> dict:
    conv = []
    for k, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": _human_first(q, rng) if k == 0 else q})
        conv.append({"from": "gpt", "value": a})
    return {"id": rid, "image": image, "conversations": conv}


def scene_texts(scene: Scene, index: int, seed: int, popular: list[tuple[str, str]]) -> tuple[dict, list[dict], list[dict]]:
    """(stage-1 record, stage-2 records, eval items) for one scene."""
    rng = np.random.default_rng([seed, index, _TEXT])
    caption = lang.caption(scene, rng)
    stage1 = {"id": scene.id, "image": scene.image, "conversations": [
        {"from": "human", "value": _human_first(lang._pick(rng, lang.BRIEF_INSTRUCTIONS), rng)},
        {"from": "gpt", "value": caption}]}
    # For the contrastive stage: captions of near-miss scenes, and each object's phrase with its box
    # (in fractions of the image). A separate stream keeps every other text as it was.
    stage1["negatives"] = lang.hard_negatives(scene, caption, np.random.default_rng([seed, index, _NEGATIVES]))
    stage1["regions"] = [{"box": [round(v / CANVAS, 4) for v in o.bbox], "phrase": lang.name(o)}
                         for o in scene.objects]

    # One long-form record per image, cycling through the three LLaVA-Instruct kinds.
    kind = ("conversation", "detail", "reasoning")[index % 3]
    if kind == "conversation":
        turns = lang.conversation(scene, rng)
    elif kind == "detail":
        turns = [(lang._pick(rng, lang.DETAIL_INSTRUCTIONS), lang.detailed_description(scene, rng))]
    else:
        turns = [lang.reasoning(scene, rng)]
    stage2 = [_record(f"{scene.id}-{kind}", scene.image, turns, rng)]

    # Short answers: the eval set and the VQA-style training record get opposite exist polarity, and
    # alternating images alternate it, so yes and no are balanced in both.
    split = lang.POPE_SPLITS[(index // 2) % len(lang.POPE_SPLITS)]
    train_qs = lang.short_questions(scene, rng, exist_positive=index % 2 == 1, pope_split=split, popular=popular)
    order = rng.permutation(len(train_qs))
    stage2.append(_record(f"{scene.id}-vqa", scene.image,
                          [(train_qs[i]["question"] + lang.SHORT_ANSWER_SUFFIX, train_qs[i]["answer"]) for i in order],
                          rng))
    eval_items = [{"id": f"{scene.id}-{q['type']}", "image": scene.image,
                   "question": q["question"] + lang.SHORT_ANSWER_SUFFIX, "answer": q["answer"], "type": q["type"],
                   **({"pope": q["pope"]} if "pope" in q else {})}
                  for q in lang.short_questions(scene, rng, exist_positive=index % 2 == 0, pope_split=split,
                                                popular=popular)]
    return stage1, stage2, eval_items


def _render_to(args: tuple[Scene, str]) -> None:
    scene, folder = args
    render_scene(scene).save(os.path.join(folder, scene.image), compress_level=1)


def synthesize(out: str | Path, n_images: int, seed: int, *, workers: int | None = None, force: bool = False,
               progress: bool = True) -> Path:
    """Write an EdgeScenes data set of `n_images` images to `out`; returns its path."""
    from tqdm import tqdm

    if n_images < 1:
        raise UserError(f"--n-images must be at least 1, got {n_images}")
    if seed < 0:
        raise UserError(f"--seed must be non-negative, got {seed}")
    workers = workers or min(os.cpu_count() or 1, 8)
    scenes = sample_scenes(n_images, seed)
    popular = popular_combos(scenes)
    with atomic_output_dir(out, force) as tmp:
        images = tmp / "images"
        images.mkdir()
        jobs = [(s, str(images)) for s in scenes]
        bar = tqdm(total=n_images, desc="rendering", unit="img", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                for _ in pool.map(_render_to, jobs, chunksize=32):
                    bar.update()
        else:
            for job in jobs:
                _render_to(job)
                bar.update()
        bar.close()

        stage1, stage2, eval_items = [], [], []
        for i, scene in enumerate(scenes):
            s1, s2, ev = scene_texts(scene, i, seed, popular)
            stage1.append(s1)
            stage2.extend(s2)
            eval_items.extend(ev)
        _write_json(tmp / "scenes.json", {"seed": seed, "canvas": 224,
                                          "images": [s.to_dict() for s in scenes]})
        _write_json(tmp / "stage1.json", stage1)
        _write_json(tmp / "stage2.json", stage2)
        _write_json(tmp / "eval.json", eval_items)
    return Path(out)


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))


def text_corpus(n_scenes: int = 1000, seed: int = 0) -> list[str]:
    """Every kind of EdgeScenes text for `n_scenes` scenes (no images drawn): tokenizer training data."""
    scenes = sample_scenes(n_scenes, seed)
    popular = popular_combos(scenes)
    texts = list(lang.BRIEF_INSTRUCTIONS) + list(lang.DETAIL_INSTRUCTIONS)
    for i, scene in enumerate(scenes):
        s1, s2, ev = scene_texts(scene, i, seed, popular)
        for record in [s1, *s2]:
            texts.extend(turn["value"] for turn in record["conversations"])
        texts.extend(item["question"] + " " + item["answer"] for item in ev)
    return texts

"""benchmarks/oracle_relations.py: its perfect image tokens and questions agree with EdgeScenes itself."""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace
from pathlib import Path

import pytest

from edgelmm.data.edgescenes.world import COLORS, SHAPES, Scene

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "oracle_relations.py"


@pytest.fixture(scope="module")
def oracle():
    spec = importlib.util.spec_from_file_location("oracle_relations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scenes(scenes_dir) -> dict[str, Scene]:
    return {s["image"]: Scene.from_dict(s) for s in json.loads((scenes_dir / "scenes.json").read_text())["images"]}


def test_patch_tokens_name_the_object_under_each_patch(oracle, scenes_dir):
    scene = next(s for s in load_scenes(scenes_dir).values() if len(s.objects) == 1)
    (obj,) = scene.objects
    tokens = oracle.patch_tokens(scene, 8)
    colours, shapes = list(COLORS), list(SHAPES)
    marked = {k for k in range(64) if tokens[k, colours.index(obj.color)] == 1}
    assert (obj.center[1] // 28) * 8 + obj.center[0] // 28 in marked
    assert all(tokens[k, len(colours) + shapes.index(obj.shape)] == 1 for k in marked)
    none = tokens[:, len(colours) + len(shapes)]
    assert set(map(int, none.nonzero()[0])) == set(range(64)) - marked  # every other patch is "none"
    assert tokens[0, -2:].tolist() == [-1, -1] and tokens[63, -2:].tolist() == [1, 1]  # column, row


def test_relation_questions_match_the_generator(oracle, scenes_dir):
    scenes = load_scenes(scenes_dir)
    asked = [i for i in json.loads((scenes_dir / "eval.json").read_text()) if i["type"] == "relation"]
    assert asked
    for item in asked:
        mine = dict(oracle.questions(scenes[item["image"]], "relation"))
        question = item["question"].split("\n")[0].replace("?", " ?")
        assert mine[question] == item["answer"]


def test_a_short_run_reports_a_learning_curve(oracle, scenes_dir):
    from edgelmm.presets import get_preset

    scenes = list(load_scenes(scenes_dir).values())
    args = Namespace(steps=4, every=2, batch=4, held_out=16, seed=0, lm_layers=1, max_objects=2)
    result = oracle.train_task(scenes, "where", args, get_preset("tiny"))
    assert result["answers"] >= 2 and 0 < result["commonest_share"] <= 1
    assert result["max_objects"] == 2 and 0 < result["scenes"] < len(scenes)  # the larger scenes left out
    assert result["lm_layers"] == 1 and [p["step"] for p in result["curve"]] == [2, 4]
    assert all(0 <= p["held_out_accuracy"] <= 1 and p["loss"] > 0 for p in result["curve"])

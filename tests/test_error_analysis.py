"""scripts/error_analysis.py on a real EdgeScenes eval set: answers sorted by what the scene held."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from edgelmm.data.edgescenes.world import COLORS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "error_analysis.py"


def load_script():
    spec = importlib.util.spec_from_file_location("error_analysis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_error_analysis_sorts_wrong_answers_by_cause(scenes_dir, tmp_path, capsys):
    items = json.loads((scenes_dir / "eval.json").read_text())
    scenes = {s["image"]: s for s in json.loads((scenes_dir / "scenes.json").read_text())["images"]}
    predictions = {item["id"]: item["answer"] for item in items}
    colours = [item for item in items if item["type"] == "color"]
    # one colour question answered with a neighbour's colour, one with a colour the scene lacks
    binding = next(item for item in colours
                   if any(o["color"] != item["answer"] for o in scenes[item["image"]]["objects"]))
    neighbour = next(o["color"] for o in scenes[binding["image"]]["objects"] if o["color"] != binding["answer"])
    misread = next(item for item in colours if item is not binding)
    absent = next(c for c in COLORS
                  if all(o["color"] != c for o in scenes[misread["image"]]["objects"]))
    count = next(item for item in items if item["type"] == "count")
    predictions.update({binding["id"]: neighbour, misread["id"]: absent.capitalize() + ".",
                        count["id"]: str(int(count["answer"]) + 1)})
    report = {"predictions": [{"id": i, "prediction": p} for i, p in predictions.items()]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))

    load_script().main([str(path), str(scenes_dir), "--json", str(tmp_path / "analysis.json")])
    analysis = json.loads((tmp_path / "analysis.json").read_text())

    assert analysis["wrong_answers"]["color"] == {"another object's": 1, "none in the scene": 1}
    assert analysis["count_misses"] == {"off by one": 1, "off by more": 0, "not a number": 0}
    colour_rows = analysis["by_objects"]["color"]
    assert sum(r["n"] - r["right"] for r in colour_rows.values()) == 2
    assert sum(r["n"] for r in colour_rows.values()) == len(colours)
    relations = analysis["relation"]
    assert all(relations[k]["exact_match"] == 1.0 for k in relations if k != "answered yes")
    assert sum(relations[k]["n"] for k in relations if k.startswith("gap")) == relations["answered yes"]["n"]
    assert "| color |" in capsys.readouterr().out

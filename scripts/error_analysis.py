"""Where a model's EdgeScenes answers go wrong: its eval report read against the scenes' ground truth.

`edgelmm eval MODEL --data DIR/eval.json --json REPORT` keeps every prediction; this script joins them
with DIR/scenes.json and breaks the exact match down by what the scene held:

- every question type by the number of objects in the scene;
- wrong colour and shape answers: naming another object of the scene (the language model read the
  wrong object: a binding failure) or naming nothing in it (the tower misread the object);
- relations by axis and by how far apart the two centres are (in fractions of the image): a model that
  reads positions gets the far pairs right first;
- counts off by one or by more.

    python scripts/error_analysis.py REPORT.json EDGESCENES_DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from edgelmm.data.edgescenes.world import CANVAS
from edgelmm.eval.evaluate import read_eval_items
from edgelmm.eval.metrics import normalize_answer

RELATION = re.compile(  # the generator's wording
    r"Is the (?P<c1>\w+) (?P<s1>\w+) (?P<rel>above|to the left of) the (?P<c2>\w+) (?P<s2>\w+)\?")
GAPS = ((0.0, "< 0.2"), (0.2, "0.2-0.4"), (0.4, ">= 0.4"))


class Tally(defaultdict):
    """Right and asked per key."""

    def __init__(self) -> None:
        super().__init__(lambda: [0, 0])

    def add(self, key, right: bool) -> None:
        self[key][0] += right
        self[key][1] += 1

    def rows(self) -> dict:
        return {str(k): {"right": r, "n": n, "exact_match": r / n} for k, (r, n) in sorted(self.items())}


def analyse(report: dict, items: list[dict], scenes: dict[str, dict]) -> dict:
    by_id = {item["id"]: item for item in items}
    by_objects: dict[str, Tally] = defaultdict(Tally)
    misses = {"color": Counter(), "shape": Counter()}  # wrong answers: naming another object, or nothing there
    relation, count_misses = Tally(), {"off by one": 0, "off by more": 0, "not a number": 0}
    for p in report["predictions"]:
        item = by_id[p["id"]]
        objects = scenes[item["image"]]["objects"]
        answer = normalize_answer(p["prediction"])  # as `edgelmm eval` scores it
        right = answer == normalize_answer(item["answer"])
        by_objects[item["type"]].add(len(objects), right)
        if item["type"] in misses and not right:
            seen = any(o[item["type"]] == answer for o in objects)  # the scene's objects have "color" and "shape"
            misses[item["type"]]["another object's" if seen else "none in the scene"] += 1
        elif item["type"] == "count" and not right:
            off = abs(int(answer) - int(item["answer"])) if answer.isdigit() else None
            count_misses["not a number" if off is None else "off by one" if off == 1 else "off by more"] += 1
        elif item["type"] == "relation":
            m = RELATION.search(item["question"])
            a, b = ([o for o in objects if o["color"] == m[f"c{i}"] and o["shape"] == m[f"s{i}"]][0] for i in (1, 2))
            axis = 1 if m["rel"] == "above" else 0
            gap = abs(a["center"][axis] - b["center"][axis]) / CANVAS
            relation.add(m["rel"], right)
            relation.add("gap " + next(name for low, name in reversed(GAPS) if gap >= low), right)
            relation.add("answered yes", answer == "yes")  # the share of yes answers, not correctness
    return {"by_objects": {t: tally.rows() for t, tally in sorted(by_objects.items())},
            "wrong_answers": {t: dict(counts) for t, counts in misses.items()},
            "relation": relation.rows(), "count_misses": count_misses}


def markdown(analysis: dict) -> str:
    sizes = sorted({int(k) for rows in analysis["by_objects"].values() for k in rows})
    lines = ["| type | " + " | ".join(f"{n} object{'s' * (n > 1)}" for n in sizes) + " |",
             "|---" * (len(sizes) + 1) + "|"]
    for qtype, rows in analysis["by_objects"].items():
        cells = [f"{100 * rows[str(n)]['exact_match']:.0f}% ({rows[str(n)]['n']})" if str(n) in rows else ""
                 for n in sizes]
        lines.append(f"| {qtype} | " + " | ".join(cells) + " |")
    lines.append("")
    for qtype, kinds in analysis["wrong_answers"].items():
        lines.append(f"Wrong {qtype} answers: " + ", ".join(f"{n} name {k}" for k, n in sorted(kinds.items())))
    lines.append("Wrong counts: " + ", ".join(f"{n} {k}" for k, n in analysis["count_misses"].items()))
    lines.append("Relations: " + ", ".join(f"{k}: {100 * v['exact_match']:.0f}% ({v['n']})"
                                           for k, v in analysis["relation"].items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the JSON report of `edgelmm eval --json`")
    parser.add_argument("data", type=Path, help="the EdgeScenes folder evaluated (eval.json, scenes.json)")
    parser.add_argument("--json", type=Path, help="also write the analysis here")
    args = parser.parse_args(argv)
    scenes = {s["image"]: s for s in json.loads((args.data / "scenes.json").read_text())["images"]}
    analysis = analyse(json.loads(args.report.read_text()), read_eval_items(args.data / "eval.json"), scenes)
    print(markdown(analysis), end="")
    if args.json:
        args.json.write_text(json.dumps(analysis, indent=2) + "\n")


if __name__ == "__main__":
    main()

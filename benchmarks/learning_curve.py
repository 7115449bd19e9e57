"""The instruct stage's learning curve: held-out accuracy of its checkpoints along training, and the loss.

    python benchmarks/learning_curve.py --stage WORK/train/instruct --snapshots DIR --data eval.json \
        [--limit N] [--name demo_learning_curve]

`--snapshots` holds copies of the stage's checkpoints (folders `step-N` with `model.safetensors` and
`config.json`: the trainer itself keeps only the newest two). Each is completed with the finished
model's tokenizer and preprocessing files, answered greedily in PyTorch as `edgelmm eval` does, and
scored by exact match per question type and POPE on the existence questions. The training loss comes
from the stage's `run/log.jsonl`.

Results: benchmarks/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TYPES = ("count", "color", "shape", "exist", "relation")


def loss_curve(stage: Path) -> list[dict]:
    rows = [json.loads(line) for line in (stage / "run" / "log.jsonl").read_text().splitlines() if line.strip()]
    return [{"step": r["step"], "epoch": r["epoch"], "loss": r["loss"]} for r in rows if "loss" in r]


def score_snapshot(weights: Path, finished: Path, items: list[dict], images: Path) -> dict:
    from edgelmm.eval.evaluate import checkpoint_answerer, evaluate
    from edgelmm.modeling.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        for f in finished.iterdir():  # tokenizer, chat template, preprocessing: as the finished model has them
            shutil.copy(weights / f.name if (weights / f.name).exists() else f, Path(tmp) / f.name)
        report = evaluate(checkpoint_answerer(load_checkpoint(tmp)), items, images, progress=False)
    pope = report["pope"]
    return {"exact_match": report["exact_match"],
            "per_type": {t: v["exact_match"] for t, v in report["per_type"].items()},
            "pope_f1": pope["f1"], "yes_ratio": pope["yes_ratio"]}


def main() -> None:
    from edgelmm.eval.evaluate import read_eval_items

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, type=Path, help="the instruct stage's output folder")
    parser.add_argument("--snapshots", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--name", default="demo_learning_curve")
    args = parser.parse_args()
    items = read_eval_items(args.data, args.limit)
    losses = loss_curve(args.stage)
    per_epoch = max(r["step"] / r["epoch"] for r in losses if r["epoch"])
    points = []
    for snap in sorted(args.snapshots.glob("step-*"), key=lambda p: int(p.name[5:])):
        step = int(snap.name[5:])
        point = {"step": step, "epoch": round(step / per_epoch, 3),
                 **score_snapshot(snap, args.stage / "model", items, args.data.parent / "images")}
        print(json.dumps({k: point[k] for k in ("step", "epoch", "exact_match", "pope_f1")}))
        points.append(point)
    report = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "stage": str(args.stage),
              "questions": len(items), "points": points, "loss": losses}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    chart(report, RESULTS / f"{args.name}.png")
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = [f"# Instruct-stage learning curve ({r['questions']} held-out questions)", "",
             f"Stage: `{r['stage']}`, {r['created']}", "",
             "| step | epoch | exact match | " + " | ".join(TYPES) + " | POPE F1 | yes-ratio |",
             "|---" * (len(TYPES) + 5) + "|"]
    for p in r["points"]:
        types = " | ".join(f"{100 * p['per_type'][t]:.1f}%" for t in TYPES)
        lines.append(f"| {p['step']} | {p['epoch']:.2f} | {100 * p['exact_match']:.1f}% | {types} | "
                     f"{p['pope_f1']:.3f} | {100 * p['yes_ratio']:.1f}% |")
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [p["epoch"] for p in r["points"]]
    acc.plot(epochs, [100 * p["exact_match"] for p in r["points"]], color="black", linewidth=2, label="all")
    for t in TYPES:
        acc.plot(epochs, [100 * p["per_type"][t] for p in r["points"]], label=t)
    acc.set(xlabel="instruct epoch", ylabel="exact match (%)", title="held-out accuracy")
    acc.legend(fontsize=8)
    loss.plot([x["epoch"] for x in r["loss"]], [x["loss"] for x in r["loss"]], color="#555555")
    loss.set(xlabel="instruct epoch", ylabel="training loss", title="training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

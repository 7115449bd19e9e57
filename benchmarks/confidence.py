"""Calibrating when an answer is "not sure", and whether that means something, on held-out questions.

    python benchmarks/confidence.py --bundle BUNDLE --data eval.json [--limit N] [--below 0.25] [--write]

Every question is answered greedily by the bundle (edgelmm's runtime) and scored by exact match as
`edgelmm eval` scores it; its confidence is `runtime.confidence` (the first answer token's probability,
halved where the photo check found a problem). The questions are split in two by their order: on the
first half the threshold is set so that --below of the answers fall under it; on the second half the
script reports the accuracy of the answers above and below it, the share below, and a reliability
diagram (accuracy per confidence bin). The threshold goes into the bundle's manifest as
`generation.unsure_below` (with --write, which scripts/build-demo-model.sh uses).

Results: benchmarks/results/confidence.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BINS = np.linspace(0, 1, 11)


def answers(bundle: Path | None, items: list[dict], images: Path) -> list[dict]:
    import edgelmm
    from edgelmm.eval.metrics import normalize_answer
    from edgelmm.quality import check_photo
    from edgelmm.runtime.confidence import confidence

    model = edgelmm.load(bundle, n_threads=2)
    findings: dict[str, int] = {}
    rows = []
    for item in items:
        path = images / item["image"]
        if item["image"] not in findings:
            findings[item["image"]] = len(check_photo(path))
        answer = model.answer(path, item["question"], max_tokens=16)
        rows.append({"id": item.get("id"), "type": item.get("type"),
                     "right": normalize_answer(answer.text) == normalize_answer(item["answer"]),
                     "confidence": confidence(answer.timings.first_token_probability, findings[item["image"]])})
    model.close()
    return rows


def split_report(rows: list[dict], threshold: float) -> dict:
    low = [r for r in rows if r["confidence"] < threshold]
    high = [r for r in rows if r["confidence"] >= threshold]
    accuracy = lambda rs: sum(r["right"] for r in rs) / len(rs) if rs else float("nan")  # noqa: E731
    return {"n": len(rows), "share_below": len(low) / len(rows), "accuracy_above": accuracy(high),
            "accuracy_below": accuracy(low), "gap_points": 100 * (accuracy(high) - accuracy(low)),
            "accuracy_all": accuracy(rows)}


def reliability(rows: list[dict]) -> list[dict]:
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        selected = [r for r in rows if lo <= r["confidence"] < hi or (hi == 1 and r["confidence"] == 1)]
        if selected:
            out.append({"from": float(lo), "to": float(hi), "n": len(selected),
                        "accuracy": sum(r["right"] for r in selected) / len(selected),
                        "mean_confidence": float(np.mean([r["confidence"] for r in selected]))})
    return out


def main() -> None:
    from edgelmm.eval.evaluate import read_eval_items

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: the built-in demo model")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--below", type=float, default=0.25, help="share of calibration answers under the threshold")
    parser.add_argument("--write", action="store_true", help="store the threshold in the bundle's manifest")
    args = parser.parse_args()
    items = read_eval_items(args.data, args.limit)
    rows = [r for r in answers(args.bundle, items, args.data.parent / "images") if r["confidence"] is not None]
    calibration, measured = rows[:len(rows) // 2], rows[len(rows) // 2:]
    threshold = round(float(np.quantile([r["confidence"] for r in calibration], args.below)), 4)
    report = {"created": datetime.datetime.now().isoformat(timespec="seconds"),
              "bundle": str(args.bundle or "demo (built in)"), "questions": len(rows), "threshold": threshold,
              "calibration": split_report(calibration, threshold), "measured": split_report(measured, threshold),
              "reliability_measured": reliability(measured)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "confidence.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "confidence.md").write_text(markdown(report))
    chart(report, RESULTS / "confidence.png")
    print(markdown(report))
    if args.write:
        write_threshold(args.bundle or default_bundle(), threshold)


def default_bundle() -> Path:
    from edgelmm.runtime.model import default_model

    return default_model()


def write_threshold(bundle: Path, threshold: float) -> None:
    import dataclasses

    from edgelmm.bundle_format import load_manifest, save_manifest

    manifest = load_manifest(bundle)
    generation = dataclasses.replace(manifest.generation, unsure_below=threshold)
    save_manifest(bundle, dataclasses.replace(manifest, generation=generation))
    print(f"generation.unsure_below = {threshold} in {bundle}")


def markdown(r: dict) -> str:
    m = r["measured"]
    lines = [f"# Confidence: {r['bundle']}, {r['questions']} questions (half to calibrate, half measured)", "",
             f"Threshold (generation.unsure_below): {r['threshold']}", "",
             "| measured half | value |", "|---|---|",
             f"| answers below the threshold | {m['share_below']:.1%} of {m['n']} |",
             f"| exact match above / below | {m['accuracy_above']:.1%} / {m['accuracy_below']:.1%} |",
             f"| gap | {m['gap_points']:.1f} points |", "",
             "| confidence | answers | exact match | mean confidence |", "|---|---|---|---|"]
    lines += [f"| {b['from']:.1f}-{b['to']:.1f} | {b['n']} | {b['accuracy']:.1%} | {b['mean_confidence']:.3f} |"
              for b in r["reliability_measured"]]
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = r["reliability_measured"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1, label="calibrated")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="#4477aa",
            label="edgelmm")
    ax.axvline(r["threshold"], color="#ee6677", linewidth=1, label=f"unsure below {r['threshold']:.2f}")
    ax.set_xlabel("confidence (first answer token's probability)")
    ax.set_ylabel("exact match")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Reliability, {r['measured']['n']} held-out answers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

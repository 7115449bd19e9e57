"""What fewer image tokens cost in answers, and whether time budgets hold, on this machine.

    python benchmarks/token_budget.py accuracy --bundle BUNDLE --data eval.json [--fractions 0.5,0.25,0.125]
        [--seeds 3] [--limit N]
    python benchmarks/token_budget.py budgets --bundle BUNDLE [--budgets 5] [--runs 10]

`accuracy` evaluates a trained bundle (with token scores) on held-out questions with all its image tokens
and, at each fraction of them, with the most important tokens, with a quarter of those merged from the
rest (VisionZip), and with random tokens (the control; the mean over --seeds runs): exact match per type
and POPE F1, as `edgelmm eval` reports them. `budgets` spreads --budgets time budgets evenly between the
smallest and the full-token predicted time to first token of the bundle (calibrated first), answers
--runs times within each and counts how often the measured time stayed within 1.1x the budget.

Results: benchmarks/results/token_budget_{accuracy,budgets}.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUESTION = "Describe the image."


def evaluate_with(bundle: Path, items: list[dict], images: Path, threads: int, **reading) -> dict:
    import edgelmm
    from edgelmm.eval.evaluate import evaluate, runtime_answerer

    model = edgelmm.load(bundle, n_threads=threads, **reading)
    report = evaluate(runtime_answerer(model), items, images, progress=False)
    model.close()
    pope = report.get("pope", {})
    return {"exact_match": report["exact_match"], "per_type": {t: r["exact_match"] for t, r in report["per_type"].items()},
            "pope_f1": pope.get("f1")}


def accuracy(args) -> dict:
    from edgelmm.bundle_format import load_manifest
    from edgelmm.eval.evaluate import read_eval_items

    n = load_manifest(args.bundle).vision.output.tokens
    items = read_eval_items(args.data, args.limit)
    images = Path(args.data).parent / "images"
    rows = [{"image_tokens": n, "selection": "all", **evaluate_with(args.bundle, items, images, args.threads)}]
    for fraction in args.fractions:
        k = max(1, round(n * fraction))
        rows.append({"image_tokens": k, "selection": "importance",
                     **evaluate_with(args.bundle, items, images, args.threads, image_tokens=k)})
        if k >= 4:
            rows.append({"image_tokens": k, "selection": f"importance, {k // 4} merged",
                         **evaluate_with(args.bundle, items, images, args.threads, image_tokens=k, merge=k // 4)})
        runs = [evaluate_with(args.bundle, items, images, args.threads, image_tokens=k, selection="random",
                              selection_seed=seed * len(items)) for seed in range(args.seeds)]  # other draws each
        rows.append({"image_tokens": k, "selection": f"random (mean of {args.seeds})",
                     "exact_match": statistics.mean(r["exact_match"] for r in runs),
                     "per_type": {t: statistics.mean(r["per_type"][t] for r in runs) for t in runs[0]["per_type"]},
                     "pope_f1": statistics.mean(r["pope_f1"] for r in runs) if runs[0]["pope_f1"] is not None else None})
    lines = [f"# Accuracy against image tokens read: {args.bundle}", "",
             f"{len(items)} questions from {args.data}.", "",
             "| image tokens | selection | exact match | per type | POPE F1 |", "|---|---|---|---|---|"]
    for r in rows:
        types = ", ".join(f"{t} {v:.1%}" for t, v in r["per_type"].items())
        f1 = f"{r['pope_f1']:.3f}" if r["pope_f1"] is not None else "-"
        lines.append(f"| {r['image_tokens']} | {r['selection']} | {r['exact_match']:.1%} | {types} | {f1} |")
    return {"rows": rows, "markdown": "\n".join(lines)}


def budgets(args) -> dict:
    import edgelmm
    from edgelmm.runtime.latency import latency_for

    model = edgelmm.load(args.bundle, n_threads=args.threads)
    latency = latency_for(model, force=True)
    spec = model.backend.image_spec
    image = np.random.default_rng(1).integers(0, 256, (spec.size, spec.size, 3), dtype=np.uint8)
    low, high = latency.predict(1), latency.predict(latency.tokens)
    rows = []
    for budget in np.linspace(low * 1.05, high, args.budgets):
        measured, chosen = [], None
        for _ in range(args.runs):
            timings = model.answer(image, QUESTION, max_tokens=1, ttft_budget=float(budget)).timings
            measured.append(timings.time_to_first_token)
            chosen = timings.image_tokens
        within = sum(t <= budget * 1.1 for t in measured)
        rows.append({"budget_s": float(budget), "image_tokens": int(chosen), "predicted_s": latency.predict(chosen),
                     "measured_median_s": statistics.median(measured), "measured_max_s": max(measured),
                     "within_1_1x": int(within), "runs": args.runs})
    lines = [f"# Time budgets on this machine: {args.bundle}", "",
             f"{args.threads} threads; latency model: encode {latency.encode_s:.3f} s, image prefill "
             + ", ".join(f"{t:.3f} s at {k}" for k, t in zip(latency.prefill_tokens, latency.prefill_s))
             + f" tokens, question {latency.question_s:.3f} s.", "",
             "| budget s | image tokens | predicted s | measured s (median, max) | within 1.1x |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget_s']:.3g} | {r['image_tokens']} | {r['predicted_s']:.3g} | "
                     f"{r['measured_median_s']:.3g}, {r['measured_max_s']:.3g} | {r['within_1_1x']}/{r['runs']} |")
    return {"rows": rows, "latency": latency.__dict__, "markdown": "\n".join(lines)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("accuracy", "budgets"))
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", help="eval.json (accuracy)")
    parser.add_argument("--fractions", default="0.5,0.25,0.125")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--budgets", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    if args.part == "accuracy" and not args.data:
        parser.error("accuracy needs --data")
    result = accuracy(args) if args.part == "accuracy" else budgets(args)
    result.update(bundle=str(args.bundle), run=time.strftime("%Y-%m-%dT%H:%M:%S"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"token_budget_{args.part}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"token_budget_{args.part}.md").write_text(result["markdown"] + "\n")
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to first token against the number of image tokens read (`--image-tokens K`), at real scale.

    nice -n 10 python benchmarks/image_tokens.py [--presets llava-phi3-mini,llava-qwen2-0.5b]
        [--fractions 1,0.5,0.25,0.111] [--rounds 3] [--threads 2] [--work runs/real_scale]

It uses the random-weight int8 bundles that `benchmarks/real_scale.py` builds under --work (run that
first); a bundle exported before vision graphs scored their tokens gets its vision graph exported again
with scores (same seed, same weights; the language model and mmproj are hard links). One process per
preset loads the bundle once and, in each round, answers the same image and question at every K, the
order of the Ks alternating between rounds; figures are medians over rounds. Random weights: speed only.
The reduction itself (which tokens, how many) is what `--image-tokens` does; prefill scales with K.

Results: benchmarks/results/image_tokens.{json,md,png} (a run of some presets keeps the others' rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from edgelmm.bundle_format import file_entry, load_manifest, save_manifest
from edgelmm.cpu import cpu_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUESTION = "Describe the image."
IMAGE = ROOT / "examples" / "es7_000002.png"
PHASES = ("image_encode", "image_prefill", "prefill", "first_token", "time_to_first_token")


def add_scores(preset: str, bundle: Path) -> bool:
    """Give `bundle` a vision graph that scores its tokens, if it has none; True if it was rebuilt."""
    import torch

    from edgelmm.export.onnx_vision import IMPORTANCE_NAME, export_vision_onnx
    from edgelmm.fsutil import atomic_output_dir
    from edgelmm.modeling import build_model
    from edgelmm.quantize.onnx import convert_vision

    manifest = load_manifest(bundle)
    if manifest.vision.output.importance:
        return False
    torch.manual_seed(0)  # the seed the bundle was built with: the same tower and projector
    parts = build_model(preset, lm_weights=False)
    with atomic_output_dir(bundle, force=True) as tmp:
        exported = export_vision_onnx(parts.model, tmp / "vision-fp32.onnx", parts.image_spec.size, importance=True)
        convert_vision(exported, tmp / "vision.onnx", manifest.vision.precision)
        exported.unlink()
        files = {"vision": file_entry(tmp, "vision.onnx")}
        for role, entry in manifest.files.items():
            if role != "vision" and not role.startswith("vision_data:"):
                os.link(bundle / entry.path, tmp / entry.path)  # same bytes, same hash
                files[role] = entry
        vision = replace(manifest.vision, output=replace(manifest.vision.output, importance=IMPORTANCE_NAME))
        save_manifest(tmp, replace(manifest, files=files, vision=vision))
    return True


def measure(bundle: Path, counts: list[int], rounds: int, threads: int) -> dict:
    """{K: {phase: [seconds per round]}} for one cold answer per K per round, in alternating order."""
    import edgelmm

    model = edgelmm.load(bundle, n_threads=threads)
    model.ask(IMAGE, QUESTION, max_tokens=1, image_tokens=counts[-1])  # warm-up
    figures = {k: {phase: [] for phase in PHASES} for k in counts}
    for round_ in range(rounds):
        for k in (counts if round_ % 2 == 0 else counts[::-1]):
            timings = model.answer(IMAGE, QUESTION, max_tokens=1, image_tokens=k).timings
            for phase in PHASES:
                figures[k][phase].append(getattr(timings, phase))
    model.close()
    return figures


def run_preset(preset: str, args) -> dict:
    bundle = args.work / preset / "bundle-int8"
    if not (bundle / "edgelmm.json").is_file():
        sys.exit(f"no bundle at {bundle}: run benchmarks/real_scale.py --presets {preset} first")
    rebuilt = add_scores(preset, bundle)
    total = load_manifest(bundle).vision.output.tokens
    counts = sorted({max(1, round(total * f)) for f in args.fractions}, reverse=True)
    figures = measure(bundle, counts, args.rounds, args.threads)
    medians = {k: {phase: statistics.median(v) for phase, v in per.items()} for k, per in figures.items()}
    full = medians[total] if total in medians else None
    rows = []
    for k in counts:
        row = {"image_tokens": k, **medians[k],
               "ttft_min": min(figures[k]["time_to_first_token"]), "ttft_max": max(figures[k]["time_to_first_token"])}
        if full:
            row["image_prefill_ratio"] = medians[k]["image_prefill"] / full["image_prefill"]
            row["ttft_ratio"] = medians[k]["time_to_first_token"] / full["time_to_first_token"]
        rows.append(row)
    return {"preset": preset, "bundle": str(bundle), "tokens": total, "rounds": args.rounds, "threads": args.threads,
            "vision_graph_rebuilt_with_scores": rebuilt, "rows": rows, "raw": {str(k): v for k, v in figures.items()},
            "run": time.strftime("%Y-%m-%dT%H:%M:%S")}


def cpu_name() -> str:
    return cpu_info().get("model name", "unknown CPU")


def markdown(results: dict) -> str:
    lines = ["# Time to first token against image tokens read (`benchmarks/image_tokens.py`)", "",
             f"{results['machine']}, {results['threads']} threads; random weights; \"{QUESTION}\"; medians over "
             "rounds (min-max). Image prefill: the prompt up to and including the image positions.", ""]
    for preset, r in results["presets"].items():
        lines += [f"## {preset} ({r['tokens']} image tokens; run {r['run']}, {r['rounds']} rounds)", "",
                  "| image tokens | encode s | image prefill s | question s | TTFT s | image prefill vs all | TTFT vs all |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['image_tokens']} | {row['image_encode']:.3f} | {row['image_prefill']:.3f} | "
                         f"{row['prefill']:.3f} | {row['time_to_first_token']:.3f} ({row['ttft_min']:.3f}-"
                         f"{row['ttft_max']:.3f}) | {row.get('image_prefill_ratio', float('nan')):.3f}x | "
                         f"{row.get('ttft_ratio', float('nan')):.3f}x |")
        lines.append("")
    return "\n".join(lines)


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(results["presets"].items())
    fig, axes = plt.subplots(1, len(presets), figsize=(6 * len(presets), 4), squeeze=False)
    for ax, (preset, r) in zip(axes[0], presets):
        rows = r["rows"]
        labels = [str(row["image_tokens"]) for row in rows]
        bottom = [0.0] * len(rows)
        for phase, label in (("image_encode", "encode"), ("image_prefill", "image prefill"),
                             ("first_token", "question + first token")):
            values = [row[phase] for row in rows]
            ax.bar(labels, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
        for x, (row, top) in enumerate(zip(rows, bottom)):  # the parts' medians stack to about the TTFT median
            ax.text(x, top, f"{row['time_to_first_token']:.2f} s", ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{preset}: time to first token")
        ax.set_xlabel("image tokens read (--image-tokens)")
        ax.set_ylabel("seconds (median)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']}, {results['threads']} threads; random weights", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="llava-phi3-mini,llava-qwen2-0.5b")
    parser.add_argument("--fractions", default="1,0.5,0.25,0.111", help="of the image tokens, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real_scale")
    args = parser.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    out = RESULTS / "image_tokens.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    machine = cpu_name()
    results = {"machine": machine, "threads": args.threads,
               "presets": previous.get("presets", {}) if previous.get("machine") == machine else {}}
    for preset in args.presets.split(","):
        results["presets"][preset] = run_preset(preset, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (RESULTS / "image_tokens.md").write_text(text + "\n")
    chart(results, RESULTS / "image_tokens.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

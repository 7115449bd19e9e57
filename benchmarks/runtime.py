"""Runtime speed and memory: the llamacpp backend (ONNX Runtime + llama.cpp) against the torch
backend (the transformers checkpoint the bundle was exported from), on the same images and questions.

Each backend runs in its own process, so peak RSS is that backend's alone. Every image is a new
question (image encoded, prompt decoded from scratch). Time to first token counts all of it, from an
image and a question given together; question to first token counts only what is left once `chat(image)`
has read the image in (an app that takes the photo before the user speaks). The backends take turns over
several rounds (a fresh process each), in alternating order, so that a shared machine's slow minutes fall
on both; figures are medians over all rounds and runs, and the ratios compare the two backends measured in
this same invocation (also shown per round, for the spread).

    python benchmarks/runtime.py [--model BUNDLE] [--images DIR] [--rounds 3] [--runs 5] [--threads 2] [--json OUT]

The bundle's source checkpoint must still exist for the torch backend (`edgelmm show BUNDLE`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "Describe the image."
METRICS = ("load", "image_encode", "image_prefill", "prefill", "time_to_first_token", "question_to_first_token",
           "tokens_per_second")


def worker(backend: str, model: str | None, images: list[str], runs: int, threads: int | None,
           max_tokens: int) -> dict:
    """Measure one backend in this process; returns per-run timings, peak RSS and size on disk."""
    import edgelmm

    started = time.perf_counter()
    loaded = edgelmm.load(model, backend=backend, n_threads=threads)
    load_seconds = time.perf_counter() - started
    loaded.ask(images[0], QUESTION, max_tokens=4)  # warm-up: first-call allocations are not the steady state
    rows = []
    for _ in range(runs):
        for image in images:
            loaded.ask(image, QUESTION, max_tokens=max_tokens)
            t = loaded.timings
            rows.append({"image_encode": t.image_encode, "image_prefill": t.image_prefill, "prefill": t.prefill,
                         "time_to_first_token": t.time_to_first_token, "question_to_first_token": t.first_token,
                         "tokens_per_second": t.tokens_per_second, "decode_tokens": t.decode_tokens})
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"backend": backend, "load": load_seconds, "runs": rows, "peak_rss_mb": peak_kb / 1024,
            "size_on_disk_mb": loaded.backend.size_on_disk / 1e6}


def summarize(results: list[dict]) -> dict:
    """Medians over the rounds (load, peak RSS) and over every run of every round (the rest)."""
    rows = [row for result in results for row in result["runs"]]
    summary = {key: statistics.median(r[key] for r in results) for key in ("load", "peak_rss_mb")}
    summary["size_on_disk_mb"] = results[0]["size_on_disk_mb"]
    for key in METRICS[1:]:
        summary[key] = statistics.median(r[key] for r in rows)
    summary["decode_tokens"] = statistics.median(r["decode_tokens"] for r in rows)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="bundle folder [default: the built-in demo model]")
    parser.add_argument("--images", help="folder of images [default: the package's examples/]")
    parser.add_argument("--rounds", type=int, default=3, help="turns per backend, each in a new process")
    parser.add_argument("--runs", type=int, default=5, help="passes over the images per turn")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both backends")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--json", dest="json_out", help="write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    folder = Path(args.images) if args.images else Path(__file__).resolve().parent.parent / "examples"
    images = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:4]
    if not images:
        parser.error(f"no images in {folder}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, images, args.runs, args.threads, args.max_tokens)))
        return 0

    common = [__file__, "--images", str(folder), "--runs", str(args.runs), "--max-tokens", str(args.max_tokens)]
    common += ["--model", args.model] if args.model else []
    common += ["--threads", str(args.threads)] if args.threads else []
    turns = {"llamacpp": [], "torch": []}
    for round_ in range(args.rounds):
        for backend in sorted(turns, reverse=round_ % 2 == 1):  # llamacpp first, then torch first, ...
            out = subprocess.run([sys.executable, *common, "--worker", backend], capture_output=True, text=True,
                                 check=True).stdout
            turns[backend].append(json.loads(out.strip().splitlines()[-1]))
    results = {backend: summarize(rounds) for backend, rounds in turns.items()}
    per_round = [summarize([ref])["time_to_first_token"] / summarize([fast])["time_to_first_token"]
                 for fast, ref in zip(turns["llamacpp"], turns["torch"])]

    fast, ref = results["llamacpp"], results["torch"]
    ratios = {"time_to_first_token_speedup": ref["time_to_first_token"] / fast["time_to_first_token"],
              "question_to_first_token_speedup": ref["question_to_first_token"] / fast["question_to_first_token"],
              "decode_speedup": fast["tokens_per_second"] / ref["tokens_per_second"],
              "peak_rss_ratio": fast["peak_rss_mb"] / ref["peak_rss_mb"],
              "load_speedup": ref["load"] / fast["load"]}
    print(f"{len(images)} images x {args.runs} runs x {args.rounds} rounds, '{QUESTION}', up to {args.max_tokens} "
          "tokens; medians")
    print(f"{'':30}{'llamacpp':>12}{'torch':>12}")
    for key, unit in (("load", "s"), ("image_encode", "s"), ("image_prefill", "s"), ("prefill", "s"),
                      ("time_to_first_token", "s"), ("question_to_first_token", "s"), ("tokens_per_second", "tok/s"),
                      ("peak_rss_mb", "MB"), ("size_on_disk_mb", "MB")):
        print(f"{key + ' (' + unit + ')':30}{fast[key]:>12.4g}{ref[key]:>12.4g}")
    for key, value in ratios.items():
        print(f"{key:34}{value:8.2f}x")
    print(f"{'time_to_first_token_speedup by round':38}{'  '.join(f'{r:.2f}x' for r in per_round)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"backends": results, "ratios": ratios, "time_to_first_token_speedup_by_round": per_round}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Coverage-guided fuzzing (atheris, libFuzzer) of what edgelmm reads from strangers: images and bundle
manifests.

    python benchmarks/fuzz.py [--seconds 600] [--target image|manifest ...]

Each target runs for --seconds in its own process. A finding is any exception other than the documented
user errors (`UserError` and its kinds), an input that takes over 10 s, or a crash of the process;
libFuzzer stops at the first one and leaves the input under runs/fuzz/TARGET/. Executions and findings
per target go to benchmarks/results/fuzz.{json,md}. Needs `pip install 'edgelmm[fuzz]'`.

Targets:
- image: bytes decoded by `imaging.open_image` and made model input by `preprocess` (Pillow's decoders,
  EXIF rotation, transparency, 16-bit and palette modes, size limits).
- manifest: bytes as a bundle's edgelmm.json, read by `load_manifest`, every file resolved inside the
  bundle folder and the chat template rendered as the runtime renders it (Jinja2's sandbox).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "fuzz"
TARGETS = ("image", "manifest")
HANG_SECONDS = 10


def _seed_images(folder: Path) -> None:
    from PIL import Image

    for path in sorted((ROOT / "examples").glob("*.png"))[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    small = Image.new("RGBA", (7, 5), (200, 30, 30, 128))
    for fmt in ("JPEG", "WEBP", "GIF", "BMP", "TIFF", "PNG"):
        buffer = io.BytesIO()
        (small.convert("RGB") if fmt in ("JPEG", "BMP") else small).save(buffer, fmt)
        (folder / f"small.{fmt.lower()}").write_bytes(buffer.getvalue())


def _seed_manifests(folder: Path) -> None:
    from edgelmm.runtime.model import default_model

    (folder / "demo.json").write_bytes((default_model() / "edgelmm.json").read_bytes())


def _image_input():
    from edgelmm.errors import UserError
    from edgelmm.imaging import ImageSpec, preprocess

    spec = ImageSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def one(data: bytes) -> None:
        try:
            preprocess(data, spec)
        except UserError:
            pass
    return one


def _manifest_input():
    from edgelmm.bundle_format import MANIFEST, load_manifest
    from edgelmm.chat import ChatFormat
    from edgelmm.errors import UserError

    bundle = WORK / "manifest" / "bundle"  # libFuzzer ends the process: a temporary folder would stay
    bundle.mkdir(parents=True, exist_ok=True)
    for name in ("vision.onnx", "lm-q4_k_m.gguf"):
        (bundle / name).write_bytes(b"\0" * 16)

    def one(data: bytes) -> None:
        (bundle / MANIFEST).write_bytes(data)
        try:
            manifest = load_manifest(bundle)
            for role in manifest.files:
                manifest.path(bundle, role)
            fmt = ChatFormat.from_manifest(manifest.prompt)
            fmt.pieces(fmt.render_marked([("What is it?", "A door."), ("Is it open?", None)]))
        except UserError:
            pass
    return one


def run_target(target: str, seconds: int) -> None:
    """In the child process: fuzz `target` until `seconds` pass or a finding."""
    import atheris

    with atheris.instrument_imports():
        import PIL.Image  # instrumented too: its decoders are what the images exercise

        PIL.Image.init()  # every format plugin, imported here so that it is instrumented

        import edgelmm.bundle_format  # noqa: F401
        import edgelmm.chat  # noqa: F401
        import edgelmm.imaging  # noqa: F401
    one = {"image": _image_input, "manifest": _manifest_input}[target]()
    corpus = WORK / target / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        (_seed_images if target == "image" else _seed_manifests)(corpus)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-timeout={HANG_SECONDS}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={WORK / target}/", "-print_final_stats=1", str(corpus)], one)
    atheris.Fuzz()


def fuzz(target: str, seconds: int) -> dict:
    """Run one target in a child process; its executions and findings."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, __file__, "--run", target, "--seconds", str(seconds)],
                          capture_output=True, text=True, errors="replace", timeout=seconds + 300)
    log = done.stdout + done.stderr
    (WORK / target).mkdir(parents=True, exist_ok=True)
    (WORK / target / "log.txt").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    findings = re.findall(r"(Uncaught Python exception|ERROR: libFuzzer: [a-z-]+|==\d+== ERROR[^\n]*)", log)
    return {"target": target, "date": time.strftime("%Y-%m-%d %H:%M"),
            "seconds": round(time.monotonic() - started, 1), "executions": int(runs[-1]) if runs else None,
            "exit_code": done.returncode, "findings": findings, "artifacts": sorted(
                p.name for p in (WORK / target).glob("*") if p.name.startswith(("crash-", "timeout-", "oom-")))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600, help="per target")
    parser.add_argument("--target", action="append", choices=TARGETS, help="default: all")
    parser.add_argument("--run", choices=TARGETS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.run:
        run_target(args.run, args.seconds)
        return 0
    from edgelmm.cpu import cpu_info

    machine = cpu_info().get("model name", "unknown CPU")
    fresh = {target: fuzz(target, args.seconds) for target in args.target or TARGETS}
    earlier = json.loads((RESULTS / "fuzz.json").read_text()) if (RESULTS / "fuzz.json").is_file() else {}
    kept = {r["target"]: r for r in earlier.get("targets", []) if earlier.get("machine") == machine}
    rows = [fresh.get(t) or kept[t] for t in TARGETS if t in fresh or t in kept]  # a target run alone updates its row
    lines = ["# Fuzzing (`benchmarks/fuzz.py`)", "", f"{machine}.", "",
             "| target | run | seconds | executions | findings |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['date']} | {r['seconds']:.0f} | {r['executions']} | "
                     f"{', '.join(r['findings'] + r['artifacts']) or 'none'} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps({"machine": machine, "targets": rows}, indent=2))
    (RESULTS / "fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r["findings"] or r["artifacts"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

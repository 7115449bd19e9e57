"""Benchmark: export a random real-scale model (llava-phi3-mini, 4.1B parameters) to a Q4_K_M bundle.

Reports wall time and peak memory (RSS) per phase and the bundle's file sizes, as text and optionally
JSON:

    nice -n 19 python benchmarks/export_real_scale.py [--preset llava-phi3-mini] [--quant q4_k_m]
                                                      [--out DIR] [--json FILE]

What it measures: the exporter (`edgelmm.export.bundle.write_bundle`), with the vision tower and
projector held in memory as usual and the language model built on the meta device; the LM's random
weights (normal, std = initializer_range; norms 1) are made one tensor at a time as the streaming GGUF
writer reaches them, so 15 GB of float32 weights are never held at once. Loading a trained checkpoint
(`edgelmm export` holds the whole model, 16 GB float32 for this preset) is not part of the figures.
The files are real: the last phase runs `edgelmm verify`'s checks, in which ONNX Runtime opens
vision.onnx and llama.cpp loads the GGUF. Without --out the bundle goes to a temporary folder that is
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path


def _maxrss(who: int) -> int:
    """Lifetime peak RSS in bytes (Linux reports KiB, macOS bytes)."""
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class Phases:
    """Wall time per phase and, when psutil is installed, the peak RSS sampled within each phase."""

    def __init__(self, interval: float = 0.05) -> None:
        self.rows: list[dict] = []
        self._peak = 0
        self._lock = threading.Lock()
        try:
            import psutil
        except ImportError:
            psutil = None
        self.sampled = psutil is not None
        if self.sampled:
            # Sampling is needed for per-phase peaks: ru_maxrss only ever grows over the process's life.
            self._process = psutil.Process()
            self._stop = threading.Event()
            threading.Thread(target=self._sample, args=(interval,), daemon=True).start()

    def _sample(self, interval: float | None = None) -> None:
        """One sample, or (with `interval`) samples until stopped."""
        while True:
            if self.sampled:
                rss = self._process.memory_info().rss
                with self._lock:
                    self._peak = max(self._peak, rss)
            if interval is None or self._stop.wait(interval):
                return

    def start(self, name: str) -> None:
        self._close()
        with self._lock:
            self._peak = 0
        self._sample()  # phases shorter than the sampling interval get their start and end
        self.rows.append({"phase": name, "start": time.perf_counter()})

    def _close(self) -> None:
        if self.rows and "seconds" not in self.rows[-1]:
            row = self.rows[-1]
            self._sample()
            row["seconds"] = time.perf_counter() - row.pop("start")
            row["peak_rss_bytes"] = self._peak if self.sampled else None
            row["peak_rss_so_far_bytes"] = _maxrss(resource.RUSAGE_SELF)

    def stop(self) -> None:
        self._close()
        if self.sampled:
            self._stop.set()


def random_weights(std: float, seed: int = 0):
    """A `materialize` function for export_gguf: random values for each meta tensor, made on demand."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def materialize(name: str, tensor):
        if tensor.ndim == 1:  # RMSNorm weights start at 1 (biases, where an architecture has them, at 0)
            return torch.ones(tensor.shape) if "norm" in name else torch.zeros(tensor.shape)
        return torch.empty(tensor.shape).normal_(0.0, std, generator=generator)

    return materialize


def run(preset: str, quant: str, out: Path) -> dict:
    import torch

    from edgelmm.bundle_format import MANIFEST, load_manifest
    from edgelmm.export.bundle import write_bundle
    from edgelmm.export.verify import verify_bundle
    from edgelmm.modeling import build_model
    from edgelmm.quantize.gguf import tensor_types

    phases = Phases()
    began = time.perf_counter()
    phases.start("build (vision tower + projector; language model on the meta device)")
    torch.manual_seed(0)
    parts = build_model(preset, lm_weights=False)
    text_config = parts.model.config.text_config
    params = sum(p.numel() for p in parts.model.parameters())  # meta tensors count too
    bundle = write_bundle(parts, out, quant=quant, force=True, log=phases.start,
                          materialize=random_weights(text_config.initializer_range))
    export_peak = _maxrss(resource.RUSAGE_SELF)
    del parts
    phases.start("verify (ONNX Runtime and llama.cpp load the files)")
    problems = verify_bundle(bundle)
    phases.stop()
    manifest = load_manifest(bundle)
    files = {entry.path: entry.size for entry in manifest.files.values()}
    files[MANIFEST] = (bundle / MANIFEST).stat().st_size
    lm_types: dict[str, int] = {}
    for kind in tensor_types(manifest.path(bundle, "lm")).values():
        lm_types[kind] = lm_types.get(kind, 0) + 1
    return {
        "preset": preset, "quant": quant, "parameters": params, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "rss_sampled": phases.sampled,
        "phases": phases.rows, "total_seconds": time.perf_counter() - began,
        "peak_rss_bytes": {"export": export_peak, "with_verify": _maxrss(resource.RUSAGE_SELF),
                           "children": _maxrss(resource.RUSAGE_CHILDREN)},
        "files": files, "lm_tensor_types": dict(sorted(lm_types.items())), "verify_problems": problems,
    }


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def report_text(r: dict) -> str:
    lines = [f"export of random {r['preset']} ({r['parameters'] / 1e9:.2f}B parameters) to {r['quant']}, "
             f"{r['cpu_count']} CPU cores, {r['torch_threads']} torch threads", "",
             f"{'phase':<72} {'seconds':>8} {'peak RSS':>10} {'so far':>10}"]
    for p in r["phases"]:
        lines.append(f"{p['phase']:<72} {p['seconds']:>8.1f} {_gb(p['peak_rss_bytes']):>10} "
                     f"{_gb(p['peak_rss_so_far_bytes']):>10}")
    peak = r["peak_rss_bytes"]
    lines += [f"{'total':<72} {r['total_seconds']:>8.1f}", "",
              f"peak RSS: export {_gb(peak['export'])}, with verify {_gb(peak['with_verify'])}, "
              f"child processes {_gb(peak['children'])}",
              "files: " + ", ".join(f"{name} {_gb(size)}" for name, size in r["files"].items()),
              "LM tensor types: " + ", ".join(f"{k} {v}" for k, v in r["lm_tensor_types"].items()),
              "verify: " + ("ok" if not r["verify_problems"] else "; ".join(r["verify_problems"]))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llava-phi3-mini")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--out", type=Path, help="bundle folder to write and keep (replaced if present) "
                                                 "[default: a temporary folder, deleted]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.out:
        result = run(args.preset, args.quant, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="edgelmm-bench-") as tmp:
            result = run(args.preset, args.quant, Path(tmp) / "bundle")
    print(report_text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if result["verify_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

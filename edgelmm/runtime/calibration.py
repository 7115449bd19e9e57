"""Settings measured on this machine, once per model, and remembered.

What runs fastest depends on the CPU and on the quantization: llama.cpp's weight re-layout at load
(`use_extra_bufts`) made Q4_K_M prefill faster on one host and a third slower on another, while Q4_0
needs it; on a host with AMX the re-laid-out weights crash llama.cpp outright (a segmentation fault at
the second batch). So nothing here is decided by CPU names: the first load of a model on a machine
measures both settings, each in a child process so that a crash only rules that setting out (a short
image-sized prefill, a second batch, a few decoded tokens), and keeps the faster one. Later loads read
the choice from a small JSON store (`$EDGELMM_CACHE_DIR`, else `~/.cache/edgelmm`), keyed by the
machine, the model file and the thread count. `edgelmm calibrate` runs it on demand. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgelmm.cpu import cpu_info
from edgelmm.fsutil import atomic_write_text
from edgelmm.runtime.llama_engine import EngineError, EngineSettings, LlamaEngine, default_threads

CACHE_ENV = "EDGELMM_CACHE_DIR"
STORE_FILE = "calibration.json"
STORE_VERSION = 1
PREFILL_PROBE = 128  # image positions prefilled per setting: long enough for full-size matrix products
DECODE_PROBE = 8  # tokens decoded per setting
ANSWER_TOKENS = 32  # a typical short answer, for weighing decode speed against prefill speed
MEASURE_TIMEOUT = 600  # seconds for one setting: loading and re-laying out a multi-gigabyte model


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgelmm")


def machine_id() -> str:
    """The CPU (model name and instruction-set flags), its core count and the llama.cpp build."""
    import llama_cpp

    info = cpu_info()
    cpu = f"{info.get('model name', platform.processor())}|{info.get('flags', '')}"
    text = f"{platform.machine()}|{cpu}|{os.cpu_count()}|{llama_cpp.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CalibrationStore:
    """The JSON file of measured settings, read and written whole (it holds a few entries per model)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.path = Path(folder or cache_dir()) / STORE_FILE

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # missing or damaged: measure again
        return data.get("entries", {}) if isinstance(data, dict) and data.get("version") == STORE_VERSION else {}

    def get(self, key: str) -> dict | None:
        return self._read().get(key)

    def put(self, key: str, record: dict) -> None:
        entries = {**self._read(), key: record}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"version": STORE_VERSION, "entries": entries}, indent=2))
        except OSError:
            pass  # a read-only home: the measurement still applies to this load


def store_key(model_sha256: str, n_threads: int) -> str:
    return f"{machine_id()}:{model_sha256[:16]}:{n_threads}"


def measure(path: str | Path, settings: EngineSettings, image_tokens: int, verbose: bool = False) -> dict:
    """Load time, prefill and decode speed of one setting (random image-like embeddings, greedy tokens)."""
    from edgelmm.runtime.llama_batch import SequenceDecoder

    started = time.perf_counter()
    engine = LlamaEngine(path, settings, n_ctx=image_tokens + DECODE_PROBE + 1, verbose=verbose)
    load = time.perf_counter() - started
    try:
        decoder = SequenceDecoder(engine)
        # Embeddings at the scale of token embeddings; llama.cpp's speed does not depend on their values.
        embeds = np.random.default_rng(0).normal(0, 0.02, (image_tokens, engine.n_embd())).astype(np.float32)
        # A first, smaller batch: first-call allocations are not the steady state, and a second batch of
        # another size after forgetting the first is what answers do (it is where AMX re-layouts crash).
        decoder.embeddings(embeds[:1])
        decoder.truncate(0)
        started = time.perf_counter()
        decoder.embeddings(embeds)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        for k in range(DECODE_PROBE):
            decoder.decode_token(k % engine.n_vocab())
        decode = time.perf_counter() - started
    finally:
        engine.close()
    return {"load_s": load, "prefill_tok_s": image_tokens / prefill, "decode_tok_s": DECODE_PROBE / decode}


def measure_isolated(path: str | Path, settings: EngineSettings, image_tokens: int, verbose: bool = False) -> dict:
    """`measure` in a child process: a setting that crashes llama.cpp comes back as {"error": ...}."""
    command = [sys.executable, "-m", "edgelmm.runtime.calibration", str(path), json.dumps(asdict(settings)),
               str(image_tokens)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=MEASURE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {MEASURE_TIMEOUT} s"}
    if verbose:
        sys.stderr.write(done.stderr)
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        return {"error": f"llama.cpp failed ({how})" + (f": {last.strip()[:200]}" if done.returncode > 0 else "")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def calibrate(path: str | Path, base: EngineSettings, image_tokens: int, verbose: bool = False) -> dict:
    """Measure llama.cpp with and without its weight re-layout; the record says which answers faster
    (`image_tokens` prefilled, then a typical answer decoded)."""
    probe = max(1, min(image_tokens, PREFILL_PROBE))
    results = {}
    for repack in (True, False):
        name = "repack" if repack else "no_repack"
        results[name] = measure_isolated(path, replace(base, repack=repack), probe, verbose)

    def answer_seconds(r: dict) -> float:
        return image_tokens / r["prefill_tok_s"] + ANSWER_TOKENS / r["decode_tok_s"]

    working = [name for name, r in results.items() if "error" not in r]
    if not working:
        raise EngineError(f"llama.cpp fails with and without its weight re-layout: {results}")
    best = min(working, key=lambda name: answer_seconds(results[name]))
    return {"repack": best == "repack", "measured": results, "image_tokens": image_tokens,
            "settings": asdict(replace(base, repack=best == "repack")),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def tuned_settings(path: str | Path, model_sha256: str, base: EngineSettings, image_tokens: int, *,
                   store: CalibrationStore | None = None, force: bool = False,
                   verbose: bool = False) -> tuple[EngineSettings, dict]:
    """`base` with the re-layout this machine runs fastest for this model: from the store, or measured
    now (and stored). Returns the settings and the calibration record."""
    store = store or CalibrationStore()
    key = store_key(model_sha256, base.n_threads)
    record = None if force else store.get(key)
    if record is None:
        record = calibrate(path, base, image_tokens, verbose)
        store.put(key, record)
    return replace(base, repack=bool(record["repack"])), record


def open_tuned(path: str | Path, *, image_tokens: int, n_ctx: int, n_threads: int | None = None,
               model_sha256: str | None = None, verbose: bool = False) -> LlamaEngine:
    """A llama.cpp engine for a GGUF file with this machine's measured settings and a fixed context."""
    from edgelmm.bundle_format import sha256

    base = EngineSettings(n_threads=n_threads or default_threads())
    settings, _ = tuned_settings(path, model_sha256 or sha256(path), base, image_tokens, verbose=verbose)
    return LlamaEngine(path, settings, n_ctx=n_ctx, max_ctx=n_ctx, verbose=verbose)


if __name__ == "__main__":  # one isolated measurement: python -m edgelmm.runtime.calibration GGUF SETTINGS N
    _path, _settings, _tokens = sys.argv[1:4]
    print(json.dumps(measure(_path, EngineSettings(**json.loads(_settings)), int(_tokens))))

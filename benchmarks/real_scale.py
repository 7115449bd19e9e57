"""Real-scale runtime benchmark: edgelmm against llama.cpp's own multimodal path, PyTorch and bare
llama.cpp, on random-weight models of the real-scale presets, with the machine's bounds measured in
the same run.

    nice -n 10 python benchmarks/real_scale.py [--presets llava-qwen2-0.5b,llava-phi3-mini] [--threads 2]
        [--rounds 3] [--images 2] [--max-tokens 16] [--work runs/real_scale] [--json/--markdown/--chart OUT]

Files (built once under --work and reused; `--rebuild` makes them again): for each preset, after
`torch.manual_seed(0)`, `build_model(preset, lm_weights=False)` is exported by `write_bundle` to
`bundle-int8/` (Q4_K_M GGUF, int8 vision.onnx, llama.cpp's f16 mmproj), with the language model's
random weights (normal, std = initializer_range) made per tensor while the GGUF is written. `bundle-fp32/`
is the same bundle with an fp32 vision.onnx; its GGUF and mmproj are hard links to the int8 bundle's.
`checkpoint/` is the same model saved for transformers: the same vision tower and projector and the
same language-model values as the GGUF's source (made by the same generator in the same order),
stored in bfloat16 for llava-phi3-mini (16 GB of float32 would not leave room to run it).

Contenders, each in a fresh process (so peak RSS is its own), taking turns over --rounds rounds in
alternating order (a shared machine's slow minute falls on all of them):
- `edgelmm-int8`, `edgelmm-fp32`: `edgelmm.load(bundle, n_threads=T)` (llamacpp backend: ONNX Runtime +
  llama.cpp), one short warm-up answer, then for each image a cold answer (`model.ask(image, question)`:
  encode, image prefill, question prefill, decode --max-tokens tokens) and a photo-first one
  (`conv = model.chat(image)` then `conv.ask(question)`: its `first_token` is the question's own time to
  first token once the image is in the cache).
- `llamacpp-mtmd`: llama.cpp's own path through llama-cpp-python's libmtmd bindings, as llama.cpp's
  mtmd-cli runs it: the same GGUF (llama.cpp's default model parameters, weight re-layout on), flash
  attention on, the mmproj in libmtmd, llama.cpp's own image decoding and preprocessing, the bundle's chat
  template with libmtmd's media marker. Encode = bitmap from the file + tokenize (preprocessing) +
  `mtmd_encode_chunk`; image prefill = the text before the image + `mtmd_helper_decode_image_chunk`; text
  prefill = the text after it; then greedy decoding (llama.cpp's sampler, one `llama_decode` a token,
  end tokens ignored). Its photo-first figure is the cold answer's question chunk (text prefill + first
  sample), which is exactly what an app would run after reading the image in; every cold answer
  starts from an empty KV cache.
- `torch-fp32`, `torch-bf16`: the torch backend (`edgelmm.load(checkpoint, backend="torch", dtype=...)`),
  measured like edgelmm. fp32 is skipped where the model would take more than half the machine's memory,
  bf16 where the CPU lacks bf16 instructions (PyTorch would emulate it) or memory is short; the reason
  is recorded.
- `bare-repack`, `bare-norepack`: the GGUF alone through llama.cpp's low-level API (n_batch = n_ubatch =
  512, flash attention on), with the load-time weight re-layout (`use_extra_bufts`) on and off: prefill
  of a float-embedding batch as long as the image (random N(0, 0.02) values), then --max-tokens tokens
  decoded one at a time (greedy). The faster setting is "the best bare llama.cpp found on the machine".
- `machine` (at the start of each round): CPU model and ISA flags; memory read bandwidth (NumPy sum over
  a 1 GiB float32 array, best of 5, on one thread and on T threads each summing a slice: NumPy releases
  the GIL in reductions); float32 GEMM peak (NumPy matmul 2048x2048, best of 5, BLAS threads = T via
  OMP/OPENBLAS/MKL_NUM_THREADS in that process); bf16 GEMM (PyTorch) where installed. The bounds use the
  best round: decode <= bandwidth / GGUF bytes (each token reads every weight once); prefill <= GEMM peak
  / (2 x the LM's matrix parameters per token: embeddings excluded, attention ignored). llama.cpp's
  quantized kernels use int8 dot products (VNNI/AMX), so its prefill may exceed the float32 GEMM bound.

Figures: per round, the median over that round's images; reported as the median over rounds with min
and max. Time to first token = encode + image prefill + first token (question prefill + first sample).
The context of llama.cpp's own path and of bare llama.cpp is sized to the run (image tokens + 128 +
--max-tokens, rounded up to 256), as edgelmm sizes its own. Random weights: speed only, the answers are
gibberish (edgelmm stops at an end token or stop string, so it may decode fewer tokens; counted).

Results are written per preset and merged: a run of one preset keeps the other presets' earlier results
in the JSON when the machine (CPU model, flags, cores, threads) is the same; the Markdown names the run
each preset came from. Develop with `--presets demo --rounds 1` (seconds).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgelmm.bundle_format import MANIFEST, is_bundle, load_manifest

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Describe the image."
DEFAULT_PRESETS = ("llava-qwen2-0.5b", "llava-phi3-mini")
CONTENDERS = {  # name -> label; the order of the first round
    "edgelmm-int8": "edgelmm, int8 vision",
    "edgelmm-fp32": "edgelmm, fp32 vision",
    "llamacpp-mtmd": "llama.cpp's own path (libmtmd)",
    "torch-fp32": "PyTorch fp32",
    "torch-bf16": "PyTorch bf16",
    "bare-repack": "bare llama.cpp, re-layout on",
    "bare-norepack": "bare llama.cpp, re-layout off",
}
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")
BARE_BATCH = 512


# ---- small helpers --------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's lifetime peak RSS (Linux reports KiB, macOS bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def context_size(image_tokens: int, max_tokens: int) -> int:
    """A context that holds the prompt, the image and the answer, in steps of 256."""
    need = image_tokens + 128 + max_tokens
    return (need + 255) // 256 * 256


def image_paths(count: int) -> list[str]:
    images = sorted(str(p) for p in (ROOT / "examples").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return images[:count]


def paths(work: Path, preset: str) -> dict[str, Path]:
    base = work / preset
    return {"int8": base / "bundle-int8", "fp32": base / "bundle-fp32", "checkpoint": base / "checkpoint",
            "info": base / "info.json", "logs": base / "logs"}


def manifest(bundle: Path):
    return load_manifest(bundle)


def bundle_file(bundle: Path, role: str) -> Path:
    return manifest(bundle).path(bundle, role)


# ---- building the files (worker "build") ----------------------------------------------------------

def build_files(preset: str, work: Path, quant: str, rebuild: bool) -> dict:
    """Make whatever of bundle-int8, bundle-fp32, checkpoint and info.json is missing."""
    import torch

    from benchmarks.export_real_scale import random_weights
    from edgelmm.export.bundle import write_bundle
    from edgelmm.modeling import build_model
    from edgelmm.modeling.build import preset_summary

    p = paths(work, preset)
    done = {"int8": is_bundle(p["int8"]), "fp32": is_bundle(p["fp32"]),
            "checkpoint": (p["checkpoint"] / "config.json").is_file()}
    if rebuild:
        done = dict.fromkeys(done, False)
    built = {}
    if all(done.values()) and p["info"].is_file():
        return {"built": built}
    torch.manual_seed(0)  # the same seed, the same vision tower and projector for every file
    parts = build_model(preset, lm_weights=False)
    std = parts.model.config.text_config.initializer_range
    if not done["int8"]:
        started = time.perf_counter()
        write_bundle(parts, p["int8"], quant=quant, vision="int8", mmproj=True, force=True,
                     materialize=random_weights(std), source=p["checkpoint"], log=print)
        built["bundle-int8"] = time.perf_counter() - started
    if not done["fp32"]:
        started = time.perf_counter()
        fp32_bundle(parts, p["int8"], p["fp32"])
        built["bundle-fp32"] = time.perf_counter() - started
    if not done["checkpoint"]:
        started = time.perf_counter()
        checkpoint(parts, p["checkpoint"], std, dtype=torch.bfloat16 if preset == "llava-phi3-mini" else torch.float32)
        built["checkpoint"] = time.perf_counter() - started
    summary = preset_summary(preset)
    text = parts.model.config.text_config
    info = {"preset": preset, "quant": quant, "image_tokens": parts.num_image_tokens, "params": summary["params"],
            "lm": {"hidden_size": text.hidden_size, "vocab_size": text.vocab_size,
                   "num_hidden_layers": text.num_hidden_layers, "tie_word_embeddings": bool(text.tie_word_embeddings)}}
    p["info"].write_text(json.dumps(info, indent=2))
    return {"built": built}


def fp32_bundle(parts, int8: Path, out: Path) -> None:
    """The int8 bundle with an fp32 vision graph: a new vision.onnx, hard links to the same GGUF and mmproj
    (same bytes: the hashes in the manifest are copied and checked against the files), its own manifest."""
    from dataclasses import replace

    from edgelmm.bundle_format import file_entry, save_manifest, sha256
    from edgelmm.export.onnx_vision import export_vision_onnx
    from edgelmm.fsutil import atomic_output_dir
    from edgelmm.quantize.onnx import convert_vision

    source = manifest(int8)
    with atomic_output_dir(out, force=True) as tmp:
        print("exporting the vision tower and projector to ONNX (fp32)")
        exported = export_vision_onnx(parts.model, tmp / "vision-fp32.onnx", parts.image_spec.size)
        convert_vision(exported, tmp / "vision.onnx", "fp32")  # as write_bundle does: one file when it fits
        exported.unlink()
        files = {"vision": file_entry(tmp, "vision.onnx")}
        for role, entry in source.files.items():
            if role == "vision" or role.startswith("vision_data:"):
                continue
            os.link(int8 / entry.path, tmp / entry.path)
            files[role] = entry  # same inode: same size and hash
        for extra in sorted(f.name for f in tmp.iterdir() if f.name not in {e.path for e in files.values()}):
            files[f"vision_data:{extra}"] = file_entry(tmp, extra)
        # Cheap for small bundles, a few seconds for large ones: proof that the links hold the same bytes.
        assert sha256(tmp / files["lm"].path) == source.files["lm"].sha256
        save_manifest(tmp, replace(source, files=files, vision=replace(source.vision, precision="fp32")))


def checkpoint(parts, out: Path, std: float, dtype) -> None:
    """Save `parts` with a real language model whose values are the GGUF's: `random_weights` replayed
    over the same tensors in the writer's order (rounded to `dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.export_real_scale import random_weights
    from edgelmm.export.gguf_lm import lm_tensors
    from edgelmm.modeling import save_checkpoint

    print(f"building the checkpoint's language model ({dtype})")
    lm = AutoModelForCausalLM.from_config(parts.model.config.text_config, dtype=dtype)
    state = lm.state_dict()
    materialize = random_weights(std)
    with torch.no_grad():
        for name, tensor in lm_tensors(parts.model):  # the order export_gguf materializes them in
            if "rotary_emb" not in name:
                state[name].copy_(materialize(name, tensor))
    parts.model.model.language_model, parts.model.lm_head = lm.model, lm.lm_head
    print(f"saving the checkpoint to {out}")
    save_checkpoint(parts, out, force=True)


# ---- the machine (worker "machine") ---------------------------------------------------------------

def cpu_description() -> dict:
    """CPU model name and the ISA flags that matter to these kernels (Linux /proc/cpuinfo)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": model, "flags": [f for f in ISA_FLAGS if f in flags], "cpu_count": os.cpu_count(),
            "memory_bytes": memory}


def measure_machine(threads: int) -> dict:
    """Memory read bandwidth and GEMM peak, in this process (BLAS threads were set by the parent)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    array = np.ones((1 << 30) // 4, dtype=np.float32)  # 1 GiB, touched so that pages exist

    def best(fn, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    one = best(lambda: np.add.reduce(array))
    slices = np.array_split(array, threads)
    with ThreadPoolExecutor(threads) as pool:
        many = best(lambda: list(pool.map(np.add.reduce, slices)))
    del array, slices
    n = 2048
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS threads start
    gemm = 2 * n ** 3 / best(lambda: a @ b)
    result = {**cpu_description(), "threads": threads,
              "bandwidth_1_thread_gbs": (1 << 30) / one / 1e9, "bandwidth_gbs": (1 << 30) / many / 1e9,
              "gemm_fp32_gflops": gemm / 1e9, "blas": blas_name(),
              "how": f"bandwidth: NumPy float32 sum over 1 GiB, best of 5, 1 and {threads} threads; GEMM: NumPy "
                     f"float32 {n}x{n} matmul, best of 5, {threads} BLAS threads"}
    try:  # the bf16 peak matters for the PyTorch bf16 contender only
        import torch

        torch.set_num_threads(threads)
        x, y = (torch.randn(n, n, dtype=torch.bfloat16) for _ in range(2))
        x @ y
        result["gemm_bf16_torch_gflops"] = 2 * n ** 3 / best(lambda: x @ y) / 1e9
    except ImportError:
        pass
    return result


def blas_name() -> str:
    import numpy as np

    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # older NumPy: no dict mode
        return "unknown"


# ---- edgelmm and PyTorch (workers "edgelmm-*", "torch-*") -----------------------------------------

def measure_model(path: Path, images: list[str], threads: int, max_tokens: int, **options) -> dict:
    """Load with edgelmm.load and answer about each image cold and photo-first."""
    import edgelmm

    started = time.perf_counter()
    model = edgelmm.load(path, n_threads=threads, **options)
    load = time.perf_counter() - started
    model.ask(images[0], QUESTION, max_tokens=2)  # warm-up: first-call allocations are not the steady state
    rows = []
    for image in images:
        model.ask(image, QUESTION, max_tokens=max_tokens)
        t = model.timings
        row = {"image": Path(image).name, "encode": t.image_encode, "image_prefill": t.image_prefill,
               "text_prefill": t.prefill, "first_token": t.first_token, "ttft": t.time_to_first_token,
               "decode_tokens": t.decode_tokens, "decode_tok_s": t.tokens_per_second}
        conversation = model.chat(image)  # the photo is read in before the question comes
        conversation.ask(QUESTION, max_tokens=max_tokens)
        row["photo_first_ttft"] = model.timings.first_token
        rows.append(row)
    return {"load": load, "rows": rows, "peak_rss_mb": peak_rss_mb()}


def prime(p: dict[str, Path], threads: int) -> dict:
    """The first load of each bundle on this machine, before any is measured: edgelmm's runtime may measure
    settings on a model's first load (and remember them), which is not the load a user sees every day."""
    import edgelmm

    first = {}
    for kind in ("int8", "fp32"):
        started = time.perf_counter()
        edgelmm.load(p[kind], n_threads=threads).close()
        first[f"edgelmm-{kind}"] = time.perf_counter() - started
    return {"first_load": first}


# ---- llama.cpp through the low-level API (workers "llamacpp-mtmd", "bare-*") ----------------------

class LlamaCpp:
    """A GGUF loaded with llama.cpp's low-level API, one context, greedy sampling."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int, n_batch: int, repack: bool | None = None) -> None:
        import llama_cpp as ll

        self.ll = ll
        ll.llama_backend_init()
        params = ll.llama_model_default_params()
        if repack is not None:  # None: llama.cpp's default (on)
            params.use_extra_bufts = repack
        self.model = ll.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        cparams = ll.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, min(n_batch, 512)
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED  # llama.cpp's CLI turns it on on CPUs
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make a context")
        self.n_batch = n_batch
        self.n_embd = ll.llama_model_n_embd(self.model)
        self.sampler = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        ll.llama_sampler_chain_add(self.sampler, ll.llama_sampler_init_greedy())

    def clear(self) -> None:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)

    def sample(self) -> int:
        return self.ll.llama_sampler_sample(self.sampler, self.ctx, -1)

    def decode_embeddings(self, embeds, start: int) -> None:
        """Float embeddings (n, n_embd) at positions start.., in slices of n_batch; logits for the last."""
        ll = self.ll
        for at in range(0, len(embeds), self.n_batch):
            part = embeds[at:at + self.n_batch]
            n = len(part)
            batch = ll.llama_batch_init(n, self.n_embd, 1)
            try:
                batch.n_tokens = n
                ctypes.memmove(batch.embd, part.ctypes.data, part.nbytes)
                for i in range(n):
                    batch.pos[i] = start + at + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = at + i == len(embeds) - 1
                if ll.llama_decode(self.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed on embeddings")
            finally:
                ll.llama_batch_free(batch)

    def generate(self, n: int) -> float:
        """Sample and decode `n` tokens one at a time (end tokens ignored: speed only); seconds taken."""
        ll = self.ll
        token = (ll.llama_token * 1)()
        started = time.perf_counter()
        for _ in range(n):
            token[0] = self.sample()
            if ll.llama_decode(self.ctx, ll.llama_batch_get_one(token, 1)) != 0:
                raise RuntimeError("llama_decode failed on a token")
        return time.perf_counter() - started


def measure_bare(gguf: Path, image_tokens: int, repeats: int, threads: int, max_tokens: int, repack: bool) -> dict:
    """Prefill of `image_tokens` random embeddings, then decoding, on the GGUF alone."""
    import numpy as np

    started = time.perf_counter()
    llm = LlamaCpp(gguf, threads, context_size(image_tokens, max_tokens), BARE_BATCH, repack=repack)
    load = time.perf_counter() - started
    rng = np.random.default_rng(0)
    embeds = rng.normal(0.0, 0.02, (image_tokens, llm.n_embd)).astype(np.float32)
    llm.decode_embeddings(embeds[:16], 0)  # warm-up
    llm.generate(2)
    llm.clear()
    rows = []
    for _ in range(repeats):
        llm.clear()
        started = time.perf_counter()
        llm.decode_embeddings(embeds, 0)
        prefill = time.perf_counter() - started
        decode = llm.generate(max_tokens)
        rows.append({"image_prefill": prefill, "prefill_tok_s": image_tokens / prefill,
                     "decode_tokens": max_tokens, "decode_tok_s": max_tokens / decode})
    ll = llm.ll
    return {"load": load, "rows": rows, "peak_rss_mb": peak_rss_mb(), "repack": repack,
            "gguf_params": ll.llama_model_n_params(llm.model), "gguf_tensor_bytes": ll.llama_model_size(llm.model)}


def prompt_text(bundle: Path, marker: str) -> str:
    """The bundle's chat template rendered for one question, the image placeholder replaced by `marker`."""
    from edgelmm.chat import ChatFormat

    fmt = ChatFormat.from_manifest(manifest(bundle).prompt)
    return fmt.render_text([(QUESTION, None)]).replace(fmt.image_placeholder, marker)


def measure_mtmd(bundle: Path, images: list[str], threads: int, max_tokens: int, repack: bool | None) -> dict:
    """llama.cpp's own multimodal path: libmtmd on the mmproj GGUF beside the same language model.
    `repack` None keeps llama.cpp's default weight re-layout (on)."""
    from llama_cpp import mtmd_cpp as mt

    image_tokens = manifest(bundle).vision.output.tokens
    n_ctx = context_size(image_tokens, max_tokens)
    started = time.perf_counter()
    llm = LlamaCpp(bundle_file(bundle, "lm"), threads, n_ctx, min(2048, n_ctx), repack=repack)  # llama.cpp's defaults
    params = mt.mtmd_context_params_default()  # flash attention auto, warm-up on: as mtmd-cli
    params.use_gpu, params.n_threads, params.print_timings = False, threads, False
    ctx = mt.mtmd_init_from_file(str(bundle_file(bundle, "mmproj")).encode(), llm.model, params)
    if not ctx:
        raise RuntimeError("libmtmd refused the mmproj")
    load = time.perf_counter() - started
    text = prompt_text(bundle, mt.mtmd_default_marker().decode())

    mtmd_answer(mt, ctx, llm, images[0], text, 2)  # warm-up
    rows = [{"image": Path(image).name, **mtmd_answer(mt, ctx, llm, image, text, max_tokens)} for image in images]
    mt.mtmd_free(ctx)
    return {"load": load, "rows": rows, "peak_rss_mb": peak_rss_mb(), "n_ctx": n_ctx, "repack": repack}


def mtmd_answer(mt, ctx, llm: LlamaCpp, image: str, text: str, max_tokens: int) -> dict:
    """One cold answer, timed per step. Chunks: text before the image, the image, text after it."""
    llm.clear()
    started = time.perf_counter()
    bitmap = mt.mtmd_helper_bitmap_init_from_file(ctx, image.encode(), False)  # llama.cpp decodes the file
    if not bitmap:
        raise RuntimeError(f"libmtmd could not read {image}")
    chunks = mt.mtmd_input_chunks_init()
    encoded = text.encode()
    inp = mt.mtmd_input_text(text=encoded, text_len=len(encoded), add_special=False, parse_special=True)
    try:
        # The template already holds its BOS (add_special=False); this resizes and normalizes the image.
        if mt.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mt.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) != 0:
            raise RuntimeError("mtmd_tokenize failed")
        encode = time.perf_counter() - started
        kinds = [mt.mtmd_input_chunk_get_type(mt.mtmd_input_chunks_get(chunks, k))
                 for k in range(mt.mtmd_input_chunks_size(chunks))]
        at = kinds.index(mt.MTMD_INPUT_CHUNK_TYPE_IMAGE)
        n_past, image_prefill = ctypes.c_int32(0), 0.0
        for k in range(at):  # the text before the image belongs to the image prefill, as in edgelmm
            started = time.perf_counter()
            eval_text(mt, ctx, llm, mt.mtmd_input_chunks_get(chunks, k), n_past, logits=False)
            image_prefill += time.perf_counter() - started
        chunk = mt.mtmd_input_chunks_get(chunks, at)
        started = time.perf_counter()
        if mt.mtmd_encode_chunk(ctx, chunk) != 0:
            raise RuntimeError("mtmd_encode_chunk failed")
        embd = mt.mtmd_get_output_embd(ctx)
        encode += time.perf_counter() - started
        started = time.perf_counter()
        no_callback = mt.mtmd_helper_post_decode_callback()  # a NULL function pointer (None is refused)
        if mt.mtmd_helper_decode_image_chunk(ctx, llm.ctx, chunk, embd, n_past.value, 0, llm.n_batch,
                                             ctypes.byref(n_past), no_callback, None) != 0:
            raise RuntimeError("mtmd_helper_decode_image_chunk failed")
        image_prefill += time.perf_counter() - started
        started = time.perf_counter()
        for k in range(at + 1, len(kinds)):
            eval_text(mt, ctx, llm, mt.mtmd_input_chunks_get(chunks, k), n_past, logits=k == len(kinds) - 1)
        text_prefill = time.perf_counter() - started
        llm.sample()  # the first token; generate() samples it again from the same logits
        first_token = time.perf_counter() - started
        decode = llm.generate(max_tokens)
    finally:
        mt.mtmd_input_chunks_free(chunks)
        mt.mtmd_bitmap_free(bitmap)
    return {"encode": encode, "image_prefill": image_prefill, "text_prefill": text_prefill,
            "first_token": first_token, "ttft": encode + image_prefill + first_token,
            "photo_first_ttft": first_token, "decode_tokens": max_tokens, "decode_tok_s": max_tokens / decode,
            "image_tokens": mt.mtmd_input_chunk_get_n_tokens(chunk)}


def eval_text(mt, ctx, llm: LlamaCpp, chunk, n_past: ctypes.c_int32, logits: bool) -> None:
    """Decode a text chunk at n_past; n_past moves on (the helper adds to what it is given)."""
    if mt.mtmd_helper_eval_chunk_single(ctx, llm.ctx, chunk, n_past.value, 0, llm.n_batch, logits,
                                        ctypes.byref(n_past)) != 0:
        raise RuntimeError("mtmd_helper_eval_chunk_single failed on text")


# ---- the worker entry point -----------------------------------------------------------------------

def run_worker(name: str, args) -> dict:
    """One contender (or the build, or the machine) in this process."""
    if name == "build":
        return build_files(args.presets[0], args.work, args.quant, args.rebuild)
    p = paths(args.work, args.presets[0])
    if name == "machine":
        return measure_machine(args.threads)
    if name == "prime":
        return prime(p, args.threads)
    images = image_paths(args.images)
    if name in ("edgelmm-int8", "edgelmm-fp32"):
        return measure_model(p[name.split("-")[1]], images, args.threads, args.max_tokens)
    if name in ("torch-fp32", "torch-bf16"):
        dtype = {"torch-fp32": "float32", "torch-bf16": "bfloat16"}[name]
        return measure_model(p["checkpoint"], images, args.threads, args.max_tokens, backend="torch", dtype=dtype)
    if name == "llamacpp-mtmd":
        repack = {"default": None, "on": True, "off": False}[args.mtmd_relayout]
        return measure_mtmd(p["int8"], images, args.threads, args.max_tokens, repack)
    if name in ("bare-repack", "bare-norepack"):
        tokens = manifest(p["int8"]).vision.output.tokens
        return measure_bare(bundle_file(p["int8"], "lm"), tokens, len(images), args.threads, args.max_tokens,
                            repack=name == "bare-repack")
    raise SystemExit(f"unknown worker {name!r}")


def spawn(name: str, args, preset: str | None, log: Path, extra: tuple[str, ...] = ()) -> dict:
    """Run a worker in a fresh process; its stderr (llama.cpp's logs among it) goes to `log`. A crash
    comes back as {"error": ..., "signal": name} (faulthandler puts the Python stack in the log)."""
    command = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), "--worker", name,
               "--work", str(args.work), *extra,
               "--threads", str(args.threads), "--images", str(args.images), "--max-tokens", str(args.max_tokens),
               "--quant", args.quant] + (["--presets", preset] if preset else [])
    command += ["--rebuild"] if args.rebuild else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)  # NumPy's BLAS (the machine's GEMM peak) and PyTorch use T threads
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        text = log.read_text(errors="replace")
        tail = text.strip().splitlines()[-4:]
        result = {"error": f"exit code {done.returncode}: " + " | ".join(tail), "log": str(log)}
        if done.returncode < 0:  # killed by a signal: a crash inside llama.cpp, say
            result["signal"] = signal.Signals(-done.returncode).name
            frames = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
            where = f" under {frames[0]}" if frames else ""  # faulthandler lists the innermost frame first
            result["error"] = f"crashed ({result['signal']}){where}"
        return result
    return json.loads(lines[-1])


# ---- planning and summarizing ---------------------------------------------------------------------

def skipped(name: str, info: dict, machine: dict) -> str | None:
    """Why a contender does not run for this preset on this machine, or None."""
    if not name.startswith("torch-"):
        return None
    params, memory = info["params"]["total"], machine["memory_bytes"]
    if name == "torch-fp32" and params * 4 * 1.25 > memory / 2:
        return (f"float32 weights ({params * 4 / 1e9:.1f} GB) would take more than half of this machine's "
                f"{memory / 2**30:.0f} GiB; measured in bf16 instead")
    if name == "torch-bf16":
        if not {"avx512_bf16", "amx_bf16"} & set(machine["flags"]):
            return "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): PyTorch would emulate bf16"
        if params * 2 * 1.25 > memory * 0.7:
            return f"bf16 weights ({params * 2 / 1e9:.1f} GB) leave too little of {memory / 2**30:.0f} GiB"
    return None


METRICS = ("encode", "image_prefill", "text_prefill", "first_token", "ttft", "photo_first_ttft", "decode_tok_s",
           "prefill_tok_s", "decode_tokens")


def summarize(rounds: list[dict], image_tokens: int) -> dict:
    """Per round the median over its images; then median, min and max over rounds."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"error": rounds[0]["error"] if rounds else "no rounds"}
    per_round = []
    for r in good:
        figures = {"load": r["load"], "peak_rss_mb": r["peak_rss_mb"]}
        for key in METRICS:
            values = [row[key] for row in r["rows"] if row.get(key) is not None]
            if values:
                figures[key] = statistics.median(values)
        if "prefill_tok_s" not in figures and figures.get("image_prefill"):
            figures["prefill_tok_s"] = image_tokens / figures["image_prefill"]
        per_round.append(figures)
    keys = sorted(set().union(*per_round))
    return {key: {"median": statistics.median(f[key] for f in per_round if key in f),
                  "min": min(f[key] for f in per_round if key in f),
                  "max": max(f[key] for f in per_round if key in f)} for key in keys} | \
        ({"errors": len(rounds) - len(good)} if len(good) < len(rounds) else {})


def median_of(summary: dict, key: str) -> float | None:
    value = summary.get(key)
    return value["median"] if isinstance(value, dict) else None


def analyse(preset_result: dict, machine: dict) -> dict:
    """Ratios against llama.cpp's own path and PyTorch, fractions of bare llama.cpp and of the bounds."""
    info, summaries = preset_result["info"], preset_result["summary"]
    bare = {n: s for n, s in summaries.items() if n.startswith("bare-") and "error" not in s}
    best_bare = max(bare, key=lambda n: median_of(bare[n], "prefill_tok_s") or 0, default=None)
    lm = info["lm"]
    embeddings = lm["vocab_size"] * lm["hidden_size"] * (1 if lm["tie_word_embeddings"] else 2)  # input (+ head)
    matmul_params = info["params"]["lm"] - embeddings
    gguf_bytes = preset_result["files"]["lm_gguf"]
    bounds = {"decode_tok_s": machine["bandwidth_gbs"] * 1e9 / gguf_bytes,
              "prefill_tok_s": machine["gemm_fp32_gflops"] * 1e9 / (2 * matmul_params),
              "matmul_params_per_token": matmul_params, "bytes_per_token": gguf_bytes,
              "bandwidth_gbs": machine["bandwidth_gbs"], "gemm_fp32_gflops": machine["gemm_fp32_gflops"]}
    references = {"llamacpp-mtmd": "llama.cpp's own path",
                  **{n: CONTENDERS[n] for n in ("torch-fp32", "torch-bf16") if n in summaries}}
    ratios = {}
    for ref, label in references.items():
        r = summaries.get(ref, {})
        if "error" in r or not r:
            continue
        for name, s in summaries.items():
            if name == ref or "error" in s or name.startswith("bare-"):
                continue
            ratios.setdefault(ref, {})[name] = {
                "ttft_speedup": _ratio(median_of(r, "ttft"), median_of(s, "ttft")),
                "photo_first_speedup": _ratio(median_of(r, "photo_first_ttft"), median_of(s, "photo_first_ttft")),
                "decode_speedup": _ratio(median_of(s, "decode_tok_s"), median_of(r, "decode_tok_s")),
                "peak_rss_ratio": _ratio(median_of(s, "peak_rss_mb"), median_of(r, "peak_rss_mb"))}
    fractions = {}
    for name, s in summaries.items():
        if "error" in s:
            continue
        prefill, decode = median_of(s, "prefill_tok_s"), median_of(s, "decode_tok_s")
        fractions[name] = {
            "prefill_of_best_bare": _ratio(prefill, median_of(bare[best_bare], "prefill_tok_s")) if best_bare else None,
            "decode_of_best_bare": _ratio(decode, median_of(bare[best_bare], "decode_tok_s")) if best_bare else None,
            "prefill_of_gemm_bound": _ratio(prefill, bounds["prefill_tok_s"]),
            "decode_of_bandwidth_bound": _ratio(decode, bounds["decode_tok_s"])}
    return {"best_bare": best_bare, "bounds": bounds, "ratios": ratios, "fractions": fractions}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def file_sizes(p: dict[str, Path]) -> dict:
    """Bytes on disk per contender's files (the edgelmm runtime does not read the mmproj)."""
    m = manifest(p["int8"])
    size = lambda bundle, role: bundle_file(bundle, role).stat().st_size  # noqa: E731
    runtime = lambda bundle: sum(e.size for r, e in manifest(bundle).files.items() if r != "mmproj") + \
        (bundle / MANIFEST).stat().st_size  # noqa: E731
    return {"lm_gguf": size(p["int8"], "lm"), "mmproj": size(p["int8"], "mmproj"),
            "vision_int8": size(p["int8"], "vision"), "vision_fp32": size(p["fp32"], "vision"),
            "checkpoint": folder_size(p["checkpoint"]),
            "per_contender": {"edgelmm-int8": runtime(p["int8"]), "edgelmm-fp32": runtime(p["fp32"]),
                              "llamacpp-mtmd": m.files["lm"].size + m.files["mmproj"].size,
                              "torch-fp32": folder_size(p["checkpoint"]), "torch-bf16": folder_size(p["checkpoint"]),
                              "bare-repack": m.files["lm"].size, "bare-norepack": m.files["lm"].size}}


# ---- one preset, all rounds -----------------------------------------------------------------------

def run_preset(preset: str, args, run_id: str) -> dict:
    p = paths(args.work, preset)
    say = lambda message: print(f"[{preset}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"preparing files under {p['int8'].parent}")
    built = spawn("build", args, preset, p["logs"] / "build.log")
    if "error" in built:
        raise SystemExit(f"[{preset}] building the files failed: {built['error']}")
    info = json.loads(p["info"].read_text())
    say("first load of each bundle (edgelmm may tune itself to the machine then)")
    primed = spawn("prime", args, preset, p["logs"] / "prime.log")
    names, skips, notes, raw, machine_rounds = list(CONTENDERS), {}, [], {}, []
    mtmd_relayout = args.mtmd_relayout
    for round_ in range(args.rounds):
        say(f"round {round_ + 1}/{args.rounds}: machine")
        machine_rounds.append(spawn("machine", args, None, p["logs"] / f"machine-r{round_}.log"))
        if round_ == 0:
            skips = {n: why for n in names if (why := skipped(n, info, machine_rounds[0]))}
        for name in (names if round_ % 2 == 0 else names[::-1]):  # alternate the order
            if name in skips:
                continue
            say(f"round {round_ + 1}/{args.rounds}: {name}")
            extra = ("--mtmd-relayout", mtmd_relayout) if name == "llamacpp-mtmd" else ()
            result = spawn(name, args, preset, p["logs"] / f"{name}-r{round_}.log", extra)
            if "signal" in result and name == "llamacpp-mtmd" and mtmd_relayout == "default":
                # llama.cpp's default weight re-layout crashes on some CPUs (AMX): measure its path anyway,
                # with the re-layout off, and say so.
                notes.append(f"llama.cpp's own path crashed ({result['signal']}) with its default weight re-layout "
                             f"(see {result['log']}); measured with the re-layout off (use_extra_bufts=False)")
                mtmd_relayout = "off"
                say(f"  {name} crashed with llama.cpp's defaults; again with the weight re-layout off")
                result = spawn(name, args, preset, p["logs"] / f"{name}-r{round_}-relayout-off.log",
                               ("--mtmd-relayout", "off"))
            if "error" in result:
                say(f"  {name} failed: {result['error']}")
                if "signal" in result:  # a crash is not a slow minute: later rounds would crash again
                    skips[name] = (f"crashed ({result['signal']}) in round {round_ + 1}; not run again "
                                   f"(see {result['log']})")
            raw.setdefault(name, []).append(result)
    machine = best_machine(machine_rounds)
    result = {"run": run_id, "machine": machine, "machine_rounds": machine_rounds, "info": info,
              "built": built.get("built", {}), "first_load": primed.get("first_load", primed), "files": file_sizes(p),
              "skipped": skips, "notes": notes, "mtmd_relayout": mtmd_relayout, "rounds": raw,
              "summary": {n: summarize(r, info["image_tokens"]) for n, r in raw.items()}}
    result["analysis"] = analyse(result, machine)
    return result


def best_machine(rounds: list[dict]) -> dict:
    """The machine's description with the best of each measured figure (bounds are maxima)."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        raise SystemExit(f"measuring the machine failed: {rounds[0]['error']}")
    best = dict(good[0])
    for key in ("bandwidth_1_thread_gbs", "bandwidth_gbs", "gemm_fp32_gflops", "gemm_bf16_torch_gflops"):
        values = [r[key] for r in good if key in r]
        if values:
            best[key] = max(values)
    return best


def machine_key(machine: dict) -> list:
    return [machine["cpu"], machine["flags"], machine["cpu_count"], machine["threads"]]


# ---- reports --------------------------------------------------------------------------------------

def _num(value: float) -> str:
    """Three significant digits, without exponents."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _cell(summary: dict, key: str, scale: float = 1.0) -> str:
    value = summary.get(key)
    if not isinstance(value, dict):
        return "-"
    med, lo, hi = (_num(value[k] * scale) for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def contender_label(name: str, preset_result: dict) -> str:
    """The contender's name, saying when llama.cpp's own path ran with other than its default settings."""
    relayout = preset_result.get("mtmd_relayout", "default")
    return CONTENDERS[name] + (f", re-layout {relayout}" if name == "llamacpp-mtmd" and relayout != "default" else "")


def _plain(text: str, limit: int = 200) -> str:
    """Text for a table cell: no column bars, one line, short."""
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    lines = ["# Real-scale runtime benchmark (`benchmarks/real_scale.py`)", "",
             f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs, {machine['memory_bytes'] / 2**30:.0f} GiB, "
             f"flags {' '.join(machine['flags']) or '-'}; {settings['threads']} threads. "
             f"Random weights (speed only); question \"{settings['question']}\", {settings['max_tokens']} decode "
             f"tokens, {settings['images']} images, medians over rounds (min-max in brackets).", ""]
    for preset, r in results["presets"].items():
        m, a, info = r["machine"], r["analysis"], r["info"]
        lines += [f"## {preset} ({info['image_tokens']} image tokens, {info['quant']})", "",
                  f"Run {r['run']} ({r['settings']['rounds']} rounds); bandwidth {m['bandwidth_gbs']:.1f} GB/s "
                  f"({m['threads']} threads; {m['bandwidth_1_thread_gbs']:.1f} on one), float32 GEMM "
                  f"{m['gemm_fp32_gflops']:.0f} GFLOP/s ({m['blas']})"
                  + (f", bf16 GEMM {m['gemm_bf16_torch_gflops']:.0f} GFLOP/s (PyTorch)"
                     if "gemm_bf16_torch_gflops" in m else "")
                  + ".", "",
                  "| contender | load s | encode ms | image prefill ms | text prefill ms | TTFT ms "
                  "| photo-first TTFT ms "
                  "| prefill tok/s | decode tok/s | peak RSS MB | size MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        sizes = r["files"]["per_contender"]
        for name in CONTENDERS:
            if name in r["skipped"] and name not in r["summary"]:
                lines.append(f"| {CONTENDERS[name]} | skipped: {_plain(r['skipped'][name])} ||||||||||")
                continue
            s = r["summary"].get(name)
            if s is None:
                continue
            if "error" in s:
                lines.append(f"| {CONTENDERS[name]} | failed: {_plain(s['error'])} ||||||||||")
                continue
            label = contender_label(name, r) + (" (best bare)" if name == a["best_bare"] else "")
            lines.append(f"| {label} | {_cell(s, 'load')} | {_cell(s, 'encode', 1e3)} "
                         f"| {_cell(s, 'image_prefill', 1e3)} | {_cell(s, 'text_prefill', 1e3)} "
                         f"| {_cell(s, 'ttft', 1e3)} | {_cell(s, 'photo_first_ttft', 1e3)} "
                         f"| {_cell(s, 'prefill_tok_s')} | {_cell(s, 'decode_tok_s')} | {_cell(s, 'peak_rss_mb')} "
                         f"| {sizes[name] / 1e6:.0f} |")
        lines.append("")
        first = ", ".join(f"{CONTENDERS[n]} {v:.2f} s" for n, v in r.get("first_load", {}).items()
                          if isinstance(v, float))
        lines += [f"- {note}" for note in r["notes"]] + ([f"- First load on this machine (before the rounds): {first}."]
                                                          if first else []) + [""]
        for ref, rows in a["ratios"].items():
            lines += [f"Against {CONTENDERS[ref]} (>1: better than it; RSS: fraction of its peak):", "",
                      "| contender | TTFT | photo-first TTFT | decode | peak RSS |", "|---|---|---|---|---|"]
            for name, x in rows.items():
                lines.append(f"| {CONTENDERS[name]} | {_x(x['ttft_speedup'])} | {_x(x['photo_first_speedup'])} "
                             f"| {_x(x['decode_speedup'])} | {_x(x['peak_rss_ratio'])} |")
            lines.append("")
        b = a["bounds"]
        lines += [f"Bounds: decode <= {_num(b['decode_tok_s'])} tok/s (bandwidth / {b['bytes_per_token'] / 1e6:.0f} MB "
                  f"GGUF), prefill <= {_num(b['prefill_tok_s'])} tok/s (float32 GEMM peak / 2 x "
                  f"{b['matmul_params_per_token'] / 1e6:.0f}M matrix parameters). Best bare llama.cpp: "
                  f"{CONTENDERS.get(a['best_bare'], '-')}.", "",
                  "| contender | prefill / best bare | decode / best bare | prefill / GEMM bound "
                  "| decode / bandwidth bound |",
                  "|---|---|---|---|---|"]
        for name, f in a["fractions"].items():
            lines.append(f"| {CONTENDERS[name]} | {_pct(f['prefill_of_best_bare'])} | {_pct(f['decode_of_best_bare'])} "
                         f"| {_pct(f['prefill_of_gemm_bound'])} | {_pct(f['decode_of_bandwidth_bound'])} |")
        lines.append("")
    lines += ["Encode: image file to embeddings (decoding, preprocessing, vision graph). Image prefill: the prompt up "
              "to and including the image positions. Text prefill: the question's tokens. TTFT: image and question "
              "given together, to the first token. Photo-first: the question's own time to first token once the "
              "image is in the KV cache. Prefill tok/s: image tokens / image prefill. Bare llama.cpp decodes a random "
              "float batch as long as the image. llama.cpp's quantized kernels use int8 dot products, so prefill "
              "may exceed the float32 GEMM bound.", ""]
    return "\n".join(lines)


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = results["presets"]
    fig, axes = plt.subplots(len(presets), 2, figsize=(13, 3.8 * len(presets) + 0.6), squeeze=False)
    colors = {"encode": "#4c72b0", "image_prefill": "#dd8452", "first_token": "#55a868"}
    for row, (preset, r) in enumerate(presets.items()):
        summaries = {n: s for n, s in r["summary"].items() if "error" not in s}
        left, right = axes[row]
        names = [n for n in CONTENDERS if n in summaries and not n.startswith("bare-")]
        lefts = [0.0] * len(names)
        for key, label in (("encode", "encode"), ("image_prefill", "image prefill"),
                           ("first_token", "text prefill + first token")):
            widths = [median_of(summaries[n], key) or 0.0 for n in names]
            left.barh([contender_label(n, r) for n in names], widths, left=lefts, color=colors[key], label=label)
            lefts = [a + b for a, b in zip(lefts, widths)]
        for y, total in enumerate(lefts):
            left.text(total, y, f" {_num(total * 1e3)} ms" if total < 1 else f" {total:.2f} s", va="center", fontsize=8)
        left.invert_yaxis()
        left.set_xlim(0, max(lefts or [1]) * 1.2)
        left.set_xlabel("time to first token, s (median)")
        left.set_title(f"{preset}: image + question to first token", fontsize=10)
        left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, frameon=False)
        names = [n for n in CONTENDERS if n in summaries]
        speeds = [median_of(summaries[n], "decode_tok_s") or 0.0 for n in names]
        right.barh([contender_label(n, r) for n in names], speeds, color="#8172b2")
        for y, v in enumerate(speeds):
            right.text(v, y, f" {_num(v)}", va="center", fontsize=8)
        a = r["analysis"]
        if a["best_bare"]:
            right.axvline(median_of(summaries[a["best_bare"]], "decode_tok_s"), color="black", ls="--", lw=1,
                          label="best bare llama.cpp")
        right.axvline(a["bounds"]["decode_tok_s"], color="red", ls=":", lw=1.5, label="bandwidth bound")
        right.invert_yaxis()
        right.set_xlim(0, max(speeds + [a["bounds"]["decode_tok_s"]]) * 1.2)
        right.set_xlabel("decode, tokens/s (median)")
        right.set_title(f"{preset}: decode", fontsize=10)
        right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    m = results["machine"]
    fig.suptitle(f"{m['cpu']} ({' '.join(m['flags'])}), {m['threads']} threads; random weights", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def merge(previous: dict | None, results: dict) -> dict:
    """Keep earlier presets' results when they were measured on the same machine (CPU, flags, threads)."""
    if previous and "machine" in previous and machine_key(previous["machine"]) == machine_key(results["machine"]):
        kept = {k: v for k, v in previous.get("presets", {}).items() if k not in results["presets"]}
        results["presets"] = {**kept, **results["presets"]}
    return results


# ---- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated; demo for development")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2, help="how many of examples/ to ask about")
    parser.add_argument("--max-tokens", type=int, default=16, help="decode tokens per answer")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real_scale", help="bundles and checkpoints")
    parser.add_argument("--rebuild", action="store_true", help="build the files again even where they exist")
    parser.add_argument("--mtmd-relayout", choices=("default", "on", "off"), default="default",
                        help="llama.cpp's weight re-layout for its own path [default: llama.cpp's default, and off "
                             "if that crashes]")
    results_dir = ROOT / "benchmarks" / "results"
    parser.add_argument("--json", type=Path, default=results_dir / "real_scale.json")
    parser.add_argument("--markdown", type=Path, default=results_dir / "real_scale.md")
    parser.add_argument("--chart", type=Path, default=results_dir / "real_scale.png")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    args.work = args.work.resolve()

    if args.worker:
        print(json.dumps(run_worker(args.worker, args)))
        return 0

    run_id = datetime.datetime.now().isoformat(timespec="seconds")
    settings = {"threads": args.threads, "rounds": args.rounds, "images": args.images, "max_tokens": args.max_tokens,
                "question": QUESTION, "quant": args.quant}
    presets = {}
    for preset in args.presets:
        presets[preset] = {**run_preset(preset, args, run_id), "settings": settings,
                           "command": " ".join(sys.argv)}
    machine = presets[args.presets[-1]]["machine"]
    previous = json.loads(args.json.read_text()) if args.json.is_file() else None
    results = merge(previous, {"machine": machine, "settings": settings, "run": run_id, "presets": presets})
    for path in (args.json, args.markdown, args.chart):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    args.markdown.write_text(text)
    chart(results, args.chart)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

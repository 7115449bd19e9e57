"""GGUF quantization with llama.cpp's quantizer (llama_model_quantize through llama-cpp-python).

K-quants need matrix rows that are a multiple of 256 and Q4_0/Q8_0 a multiple of 32; llama.cpp falls
back to a wider type for tensors that do not fit, which `tensor_types` makes visible.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from edgelmm.errors import UserError

# Name on the command line -> llama.cpp file type. f32 and f16 are written directly by the exporter.
QUANT_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
               "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
EXPORT_TYPES = ("f32", "f16")
# What the exporter writes for the quantizer to read (llama.cpp's own converter also writes f16): half
# the disk and I/O of f32 (7.6 GB instead of 15 GB for a 3.8B model), and its rounding is far below
# that of the 8- and 4-bit levels made from it.
QUANT_SOURCE = "f16"
ALL_TYPES = (*QUANT_TYPES, *EXPORT_TYPES)


def quantize_gguf(src: str | Path, dst: str | Path, quant: str, threads: int | None = None,
                  verbose: bool = False) -> Path:
    """Quantize the GGUF at `src` to `quant` into `dst` (llama.cpp's per-tensor log only if `verbose`)."""
    import llama_cpp

    from edgelmm.quiet import native_stderr_silenced

    if quant not in QUANT_TYPES:
        raise UserError(f"unknown quantization {quant!r}; valid: {', '.join(ALL_TYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = threads or os.cpu_count() or 1
    with native_stderr_silenced(not verbose):
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if code != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to {quant} (code {code})")
    return Path(dst)


def tensor_types(path: str | Path) -> dict[str, str]:
    """Tensor name -> storage type of a GGUF file (for checking which tensors fell back)."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}

"""llama.cpp's own multimodal path (libmtmd, through llama-cpp-python) on a bundle's mmproj GGUF.

edgelmm's runtime encodes images with ONNX Runtime; this is the other way to run the same weights, as
llama.cpp's tools do. `edgelmm verify` uses it to check that llama.cpp accepts the mmproj beside the
bundle's language model, tests compare its embeddings with the ONNX graph's, and the real-scale
benchmark measures it. Torch-free.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edgelmm.quiet import native_stderr_silenced

CHUNK_TYPE_IMAGE = 1  # MTMD_INPUT_CHUNK_TYPE_IMAGE


class MtmdError(RuntimeError):
    """libmtmd refused a file or an image."""


class MtmdVision:
    """libmtmd's vision encoder for an mmproj GGUF, paired with an already loaded llama.cpp model.

    `model` is a `llama_model` pointer (`llama_cpp.Llama(...).model`, or one from
    `llama_model_load_from_file`); libmtmd checks that the mmproj's output width matches it.
    """

    def __init__(self, mmproj: str | Path, model, *, n_threads: int = 1, verbose: bool = False) -> None:
        from llama_cpp import mtmd_cpp

        self._mt = mtmd_cpp
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = n_threads
        params.print_timings = verbose
        params.warmup = False
        with native_stderr_silenced(not verbose):
            self.ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), model, params)
        if not self.ctx:
            raise MtmdError(f"llama.cpp's multimodal loader refused {Path(mmproj).name}")
        self.marker = mtmd_cpp.mtmd_default_marker()

    def tokenize(self, text: bytes, rgb: np.ndarray):
        """libmtmd's chunks for `text` (holding `self.marker` once) with the image `rgb` (H, W, 3 uint8)."""
        mt = self._mt
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        data = (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes())
        bitmap = mt.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], data)
        chunks = mt.mtmd_input_chunks_init()
        inp = mt.mtmd_input_text()
        inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), False, True
        try:
            code = mt.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), (mt.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
        finally:
            mt.mtmd_bitmap_free(bitmap)
        if code != 0:
            mt.mtmd_input_chunks_free(chunks)
            raise MtmdError(f"libmtmd could not tokenize the prompt (code {code})")
        return chunks

    def encode(self, rgb: np.ndarray, width: int) -> np.ndarray:
        """The image's embeddings (N, width) as llama.cpp computes them (its own preprocessing)."""
        mt = self._mt
        chunks = self.tokenize(self.marker, rgb)
        try:
            for k in range(mt.mtmd_input_chunks_size(chunks)):
                chunk = mt.mtmd_input_chunks_get(chunks, k)
                if mt.mtmd_input_chunk_get_type(chunk) == CHUNK_TYPE_IMAGE:
                    n = mt.mtmd_input_chunk_get_n_tokens(chunk)
                    if mt.mtmd_encode_chunk(self.ctx, chunk) != 0:
                        raise MtmdError("libmtmd could not encode the image")
                    out = mt.mtmd_get_output_embd(self.ctx)
                    return np.ctypeslib.as_array(out, shape=(n * width,)).reshape(n, width).copy()
            raise MtmdError("libmtmd made no image chunk")
        finally:
            mt.mtmd_input_chunks_free(chunks)

    def close(self) -> None:
        if self.ctx:
            self._mt.mtmd_free(self.ctx)
            self.ctx = None

    __del__ = close

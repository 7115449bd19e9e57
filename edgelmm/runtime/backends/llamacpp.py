"""The default backend: ONNX Runtime runs `vision.onnx`, llama.cpp runs the GGUF language model.

Image embeddings enter llama.cpp as a float batch at the image placeholder's positions; llama.cpp's
own sampler picks each token. Imports neither torch nor transformers, so it runs on hosts that have
neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgelmm.errors import UserError
from edgelmm.export.manifest import BundleError, check_files, read_manifest
from edgelmm.imaging import ImageSpec
from edgelmm.quiet import native_stderr_silenced
from edgelmm.runtime.llama_batch import Sampler, SequenceDecoder
from edgelmm.runtime.prompt import ChatFormat

# Hashing reads every byte; above this size a load checks file sizes only and `edgelmm verify`
# checks the hashes, so a multi-gigabyte model does not pay seconds before its first word.
HASH_ON_LOAD_LIMIT = 256 << 20
DEFAULT_MAX_CTX = 4096
# A vision graph this small (the demo's int8 graph is 2.4 MB: 64 tokens through 4 layers) runs fastest on
# one ONNX Runtime thread between llama.cpp calls: its ops are too short to repay handing work to a second
# thread, and that thread would compete with llama.cpp's, still spinning from the last decode.
SMALL_VISION_GRAPH = 32 << 20


class LlamaCppBackend:
    def __init__(self, bundle: str | Path, *, n_threads: int | None = None, n_ctx: int | None = None,
                 verbose: bool = False) -> None:
        import llama_cpp
        import onnxruntime as ort

        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        files = manifest["files"]
        self.size_on_disk = sum(f["size"] for f in files.values())
        problems = check_files(bundle, manifest, hashes=self.size_on_disk <= HASH_ON_LOAD_LIMIT)
        if problems:
            raise BundleError(f"bundle {bundle} is damaged: {'; '.join(problems)} (see `edgelmm verify`)")
        self.manifest = manifest
        self.chat = ChatFormat.from_manifest(manifest["prompt"])
        self.image_spec = ImageSpec.from_dict(manifest["vision"]["input"])
        n_ctx = n_ctx or min(manifest["lm"]["context_length"], DEFAULT_MAX_CTX)

        options = ort.SessionOptions()
        options.log_severity_level = 0 if verbose else 3
        if files["vision"]["size"] <= SMALL_VISION_GRAPH:
            options.intra_op_num_threads = 1
        elif n_threads:
            options.intra_op_num_threads = n_threads
        # ONNX Runtime's idle threads otherwise spin for a while after each image, on the very cores
        # llama.cpp needs for the prefill that follows.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.vision = ort.InferenceSession(str(bundle / files["vision"]["path"]), options,
                                           providers=["CPUExecutionProvider"])
        self._vision_input = manifest["vision"]["input"]["name"]
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        try:
            with native_stderr_silenced(not verbose):
                # Flash attention, llama.cpp's own default on CPU (the Python binding turns it off): the
                # image's prefill takes a fifth less time.
                self.llm = llama_cpp.Llama(str(bundle / files["lm"]["path"]), n_ctx=n_ctx, n_batch=512,
                                           n_threads=threads, n_threads_batch=threads, flash_attn=True,
                                           verbose=verbose)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"llama.cpp cannot load {files['lm']['path']}: {e}") from None
        self.n_ctx = self.llm.n_ctx()
        self.decoder = SequenceDecoder(self.llm)

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.vision.run(None, {self._vision_input: pixel_values[None]})[0][0]

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    @property
    def position(self) -> int:
        return self.decoder.pos

    def truncate(self, n: int) -> None:
        self.decoder.truncate(n)

    def feed_tokens(self, ids: list[int]) -> None:
        if len(ids) == 1:
            self.decoder.decode_token(ids[0])
        else:
            self.decoder.tokens(ids)

    def feed_embeddings(self, embeds: np.ndarray) -> None:
        if embeds.shape[1] != self.decoder.n_embd:
            raise UserError(f"image embeddings are {embeds.shape[1]} wide; this model takes {self.decoder.n_embd}")
        self.decoder.embeddings(embeds)

    def sampler(self, temperature: float, seed: int):
        sampler = Sampler(temperature, seed)
        return lambda: sampler.sample(self.llm)

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(self.llm.model), token))

    def token_bytes(self, token: int) -> bytes:
        return self.llm.detokenize([token], special=False)

    def close(self) -> None:
        self.llm.close()

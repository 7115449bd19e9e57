"""The default backend: ONNX Runtime runs `vision.onnx`, llama.cpp runs the GGUF language model.

Image embeddings enter llama.cpp as a float batch at the image placeholder's positions; llama.cpp's
own sampler picks each token. Imports neither torch nor transformers, so it runs on hosts that have
neither.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgelmm.errors import UserError
from edgelmm.bundle_format import BundleError, check_files, load_manifest
from edgelmm.imaging import ImageSpec
from edgelmm.runtime.calibration import tuned_settings
from edgelmm.runtime.llama_batch import Sampler, SequenceDecoder
from edgelmm.runtime.llama_engine import EngineError, EngineSettings, LlamaEngine, default_threads
from edgelmm.runtime.confidence import softmax_at
from edgelmm.runtime.vision_graph import open_vision_graph
from edgelmm.chat import ChatFormat

# Hashing reads every byte; above this size a load checks file sizes only and `edgelmm verify`
# checks the hashes, so a multi-gigabyte model does not pay seconds before its first word.
HASH_ON_LOAD_LIMIT = 256 << 20
PROMPT_ROOM = 128  # positions for the chat template and a question, beside the image and the answer
ANSWER_ROOM = 64
# A vision graph this small (the demo's int8 graph is 2.4 MB: 64 tokens through 4 layers) runs fastest on
# one ONNX Runtime thread between llama.cpp calls: its ops are too short to repay handing work to a second
# thread, and that thread would compete with llama.cpp's, still spinning from the last decode.
SMALL_VISION_GRAPH = 32 << 20


class LlamaCppBackend:
    """`vision.onnx` in ONNX Runtime, the GGUF in llama.cpp (settings measured per machine)."""

    name = "llamacpp"

    def __init__(self, bundle: str | Path, *, n_threads: int | None = None, n_ctx: int | None = None,
                 repack: bool | None = None, verbose: bool = False) -> None:
        """`n_ctx` fixes the context; without it the context starts at what one answer about an image
        needs and grows with the conversation. `repack` fixes llama.cpp's weight re-layout; without it
        the setting measured fastest on this machine is used (measured at the first load)."""
        import onnxruntime as ort

        bundle = Path(bundle)
        manifest = load_manifest(bundle)
        files = manifest.files
        self.size_on_disk = sum(f.size for role, f in files.items() if role != "mmproj")  # not read here
        problems = check_files(bundle, manifest, hashes=self.size_on_disk <= HASH_ON_LOAD_LIMIT)
        if problems:
            raise BundleError(f"bundle {bundle} is damaged: {'; '.join(problems)} (see `edgelmm verify`)")
        self.manifest = manifest
        self.chat = ChatFormat.from_manifest(manifest.prompt)
        self.image_spec = ImageSpec.from_dict(asdict(manifest.vision.input))
        threads = n_threads or default_threads()

        options = ort.SessionOptions()
        options.log_severity_level = 0 if verbose else 3
        options.intra_op_num_threads = 1 if files["vision"].size <= SMALL_VISION_GRAPH else threads
        # ONNX Runtime's idle threads otherwise spin for a while after each image, on the very cores
        # llama.cpp needs for the prefill that follows.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.vision = open_vision_graph(manifest.path(bundle, "vision"), manifest.vision, options)
        self._vision_input = manifest.vision.input.name

        lm_path = manifest.path(bundle, "lm")
        image_tokens = manifest.vision.output.tokens
        settings = EngineSettings(n_threads=threads)
        try:
            if repack is None:
                settings, self.calibration = tuned_settings(lm_path, files["lm"].sha256, settings, image_tokens,
                                                            verbose=verbose)
            else:
                settings, self.calibration = replace(settings, repack=repack), None
            max_ctx = manifest.lm.context_length
            # Without a fixed context: room for the image, a prompt and a short answer; longer answers and
            # conversations double it (the KV cache of a 4096-position Phi-3-mini context is 1.6 GB).
            start = n_ctx or image_tokens + PROMPT_ROOM + ANSWER_ROOM
            self.llm = LlamaEngine(lm_path, settings, n_ctx=min(start, max_ctx),
                                   max_ctx=n_ctx or max_ctx, verbose=verbose)
        except EngineError as e:
            raise BundleError(f"{files['lm'].path}: {e}") from None
        self.settings = settings
        self.decoder = SequenceDecoder(self.llm)

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def reserve(self, n_positions: int) -> None:
        """Grow the context (keeping the cache) to hold `n_positions`, up to the model's limit."""
        self.llm.ensure_context(min(n_positions, self.llm.max_ctx))

    def encode_image(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.vision.run(None, {self._vision_input: pixel_values[None]})
        return outputs[0][0], (outputs[1][0] if self.manifest.vision.output.importance else None)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

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

    def sampler(self, temperature: float, seed: int, top_p: float = 1.0):
        sampler = Sampler(temperature, seed, top_p)
        return lambda: sampler.sample(self.llm)

    def save_state(self) -> bytes:
        """The KV cache of the sequence, to be put back with `load_state`."""
        return self.llm.save_sequence()

    def load_state(self, state: bytes, n_positions: int) -> None:
        """Put back a cache from `save_state` holding `n_positions` positions (replacing the sequence)."""
        self.reserve(n_positions + 1)
        self.llm.load_sequence(state)
        self.decoder.pos = n_positions

    def is_end(self, token: int) -> bool:
        return self.llm.is_end(token)

    def token_probability(self, token: int) -> float:
        """The probability the model gave `token` at the last decoded position (temperature 1)."""
        return softmax_at(self.llm.last_logits(), token)

    def token_bytes(self, token: int) -> bytes:
        return self.llm.piece(token)

    def info(self) -> dict:
        return {"backend": self.name, "threads": self.settings.n_threads, "repack": self.settings.repack,
                "n_ctx": self.n_ctx, "vision_precision": self.manifest.vision.precision,
                "quant": self.manifest.lm.quant}

    def close(self) -> None:
        self.llm.close()


BACKEND = LlamaCppBackend

"""The reference backend: the transformers checkpoint itself (vision tower, projector, LM) in PyTorch.

It computes what the exported files must reproduce, so parity tests and evaluation compare the
`llamacpp` backend against it. A bundle stands for the checkpoint it was exported from.

Precision: float32 by default (the reference). `dtype="bfloat16"` (or `edgelmm.load(..., backend="torch",
dtype="bfloat16")`, or the environment variable EDGELMM_TORCH_DTYPE=bfloat16 when no dtype is given)
loads and runs the whole model in bfloat16: half the memory, and faster where the CPU computes in bf16
(AVX512-BF16 or AMX); elsewhere PyTorch emulates it slowly. `dtype="auto"` picks bfloat16 exactly where
the CPU has those instructions. Image pixels and image embeddings fed in are cast to the model's dtype;
logits come out as float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgelmm.errors import UserError
from edgelmm.chat import ChatFormat
from edgelmm.cpu import cpu_flags


def checkpoint_of(model: str | Path) -> Path:
    """A checkpoint folder as given, or the source checkpoint a bundle records."""
    from edgelmm.bundle_format import is_bundle, load_manifest

    model = Path(model)
    if is_bundle(model):
        recorded = load_manifest(model).provenance.source_checkpoint
        if recorded is None:
            raise UserError(f"the torch backend needs the checkpoint bundle {model} was exported from; "
                            "the bundle does not record one")
        source = Path(recorded)
        if not (source / "config.json").is_file():
            raise UserError(f"the torch backend needs the checkpoint bundle {model} was exported from; "
                            f"{source} is gone")
        return source
    return model


DTYPE_ENV = "EDGELMM_TORCH_DTYPE"
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(dtype: str | None) -> str:
    """The dtype name to run in: the one given, else $EDGELMM_TORCH_DTYPE, else float32."""
    name = (dtype or os.environ.get(DTYPE_ENV) or "float32").strip().lower()
    if name == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    if name not in DTYPES:
        raise UserError(f"unknown torch dtype {name!r}; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


class TorchBackend:
    """The transformers checkpoint in PyTorch: the reference."""

    name = "torch"

    def __init__(self, model: str | Path, *, n_threads: int | None = None, n_ctx: int | None = None,
                 verbose: bool = False, dtype: str | None = None) -> None:
        import torch
        from transformers import DynamicCache

        from edgelmm.modeling import load_checkpoint
        from edgelmm.modeling.vision_encoder import VisionEncoder, has_token_scores

        if n_threads:
            torch.set_num_threads(n_threads)
        path = checkpoint_of(model)
        self.dtype_name = resolve_dtype(dtype)
        self.dtype = getattr(torch, self.dtype_name)
        self.parts = parts = load_checkpoint(path, dtype=self.dtype)
        parts.model.eval()
        tok = parts.tokenizer
        self.chat = ChatFormat.from_tokenizer(tok, parts.model.generation_config)
        self.image_spec = parts.image_spec
        self.n_ctx = n_ctx or parts.model.config.text_config.max_position_embeddings
        self.size_on_disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        self._vision = VisionEncoder(parts.model, importance=has_token_scores(parts.model.config)).eval()
        self._ends = set(tok.convert_tokens_to_ids(self.chat.stop))
        self._new_cache = DynamicCache
        self._byte_decoder = _byte_decoder(tok)
        self.truncate(0)

    def encode_image(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        with torch.no_grad():
            out = self._vision(torch.from_numpy(pixel_values)[None].to(self.dtype))
        if self._vision.importance:
            return out[0][0].float().numpy(), out[1][0].float().numpy()
        return out[0].float().numpy(), None

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.parts.tokenizer(text, add_special_tokens=False, split_special_tokens=not special).input_ids

    @property
    def position(self) -> int:
        return self._pos

    def reserve(self, n_positions: int) -> None:
        """The cache grows by itself; the context limit stays `n_ctx`."""

    def truncate(self, n: int) -> None:
        if n == 0:
            self._cache, self._pos = self._new_cache(), 0
        elif n < self._pos:
            self._cache.crop(n - self._pos)  # a negative count: positions to drop from the end
            self._pos = n
        self._logits = None

    def feed_tokens(self, ids: list[int]) -> None:
        import torch

        self._forward(self.parts.model.get_input_embeddings()(torch.tensor([ids])))

    def feed_embeddings(self, embeds: np.ndarray) -> None:
        import torch

        self._forward(torch.from_numpy(np.ascontiguousarray(embeds, dtype=np.float32))[None].to(self.dtype))

    def _forward(self, embeds) -> None:
        import torch

        n = embeds.shape[1]
        with torch.no_grad():
            out = self.parts.model.model.language_model(
                inputs_embeds=embeds, past_key_values=self._cache, use_cache=True,
                position_ids=torch.arange(self._pos, self._pos + n)[None])
            self._logits = self.parts.model.lm_head(out.last_hidden_state[0, -1]).float()
        self._pos += n

    def sampler(self, temperature: float, seed: int, top_p: float = 1.0):
        import torch

        generator = torch.Generator().manual_seed(seed)

        def sample() -> int:
            if temperature <= 0:
                return int(self._logits.argmax())
            logits = self._logits
            if top_p < 1:  # only the smallest set of most likely tokens whose probability reaches top_p
                ordered, order = torch.softmax(logits, dim=-1).sort(descending=True)
                logits = logits.clone()
                logits[order[ordered.cumsum(0) - ordered >= top_p]] = -torch.inf
            probs = torch.softmax(logits / temperature, dim=-1)
            return int(torch.multinomial(probs, 1, generator=generator))
        return sample

    def is_end(self, token: int) -> bool:
        return token in self._ends

    def token_probability(self, token: int) -> float:
        import torch

        return float(torch.softmax(self._logits.float(), dim=-1)[token])

    def token_bytes(self, token: int) -> bytes:
        tok = self.parts.tokenizer
        if token in tok.all_special_ids:
            return b""
        piece = tok.convert_ids_to_tokens(token)
        if piece is None:  # an id of the embedding matrix's padding, beyond the tokenizer (untrained models emit them)
            return b""
        if self._byte_decoder is not None:
            return bytes(self._byte_decoder[c] for c in piece)
        return tok.convert_tokens_to_string([piece]).encode("utf-8")

    def info(self) -> dict:
        return {"backend": self.name, "dtype": self.dtype_name, "n_ctx": self.n_ctx}

    def close(self) -> None:
        self._cache = None


def _byte_decoder(tokenizer) -> dict[str, int] | None:
    """The byte-level BPE alphabet (GPT-2's printable stand-ins for bytes) mapped back to bytes, so a
    token's exact bytes come out even when it holds part of a multi-byte character."""
    import json

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            stand_ins.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, stand_ins)}


BACKEND = TorchBackend

"""Finding a model's files in a local Ollama store, for `edgelmm import ollama NAME`.

Ollama keeps a model as a manifest (manifests/HOST/NAMESPACE/MODEL/TAG, JSON) whose layers name
content-addressed blobs (blobs/sha256-HEX) by media type: the language model GGUF, the projector
(mmproj) GGUF, its prompt template (Go text/template syntax, which edgelmm does not run), system
prompt and parameters (stop strings among them). Names resolve as Ollama resolves them: `llava` is
registry.ollama.ai/library/llava:latest. The store is read only; the name, the manifest and the
digests are checked so that nothing outside the store is read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgelmm.errors import UserError
from edgelmm.fsutil import read_small_text

MEDIA = "application/vnd.ollama.image."
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
# Marks of the chat formats in edgelmm.chat_templates, to suggest a --template for an Ollama template.
_TEMPLATE_MARKS = {"chatml": "<|im_start|>", "phi3": "<|assistant|>", "llama3": "<|start_header_id|>",
                   "vicuna": "ASSISTANT:"}


@dataclass
class OllamaModel:
    name: str
    model: Path  # the language model GGUF
    projector: Path  # the mmproj GGUF
    digests: dict[str, str]  # "lm" / "mmproj" -> sha256 hex, as the manifest names the blobs
    system: str | None = None
    stop: list[str] = field(default_factory=list)
    go_template: str | None = None

    def template_hint(self) -> str | None:
        """The name of the chat template Ollama's own template seems to be, if any."""
        for name, mark in _TEMPLATE_MARKS.items():
            if self.go_template and mark in self.go_template:
                return name
        return None


def default_store() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def manifest_path(store: Path, name: str) -> Path:
    """Where Ollama keeps the manifest of `name` ([HOST/][NAMESPACE/]MODEL[:TAG])."""
    base, _, tag = name.partition(":")
    parts = base.split("/")
    if len(parts) > 3 or not all(_PART.fullmatch(p) for p in [*parts, tag or DEFAULT_TAG]):
        raise UserError(f"{name!r} is not an Ollama model name ([HOST/][NAMESPACE/]MODEL[:TAG])")
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][:3 - len(parts)] + parts
    return store / "manifests" / Path(*parts) / (tag or DEFAULT_TAG)


def find_model(name: str, store: str | Path | None = None) -> OllamaModel:
    """The files of model `name` in the Ollama store (default: $OLLAMA_MODELS or ~/.ollama/models)."""
    store = Path(store) if store else default_store()
    path = manifest_path(store, name)
    if not path.is_file():
        raise UserError(f"no model {name!r} in the Ollama store {store} (no {path})")
    try:
        layers = json.loads(read_small_text(path, "Ollama manifest"))["layers"]
        blobs = {}
        for layer in layers:
            kind, digest = layer["mediaType"], _DIGEST.fullmatch(layer["digest"])
            if not isinstance(kind, str) or digest is None:
                raise ValueError(f"layer digest {layer['digest']!r}")
            if kind.startswith(MEDIA):
                blobs.setdefault(kind.removeprefix(MEDIA), digest.group(1))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an Ollama manifest ({e})") from None

    def blob(kind: str) -> Path:
        return store / "blobs" / f"sha256-{blobs[kind]}"

    if "model" not in blobs:
        raise UserError(f"Ollama model {name!r} has no language model layer")
    if "projector" not in blobs:
        raise UserError(f"Ollama model {name!r} has no projector (mmproj) layer: it does not see images")
    try:
        params = json.loads(read_small_text(blob("params"), "parameters")) if "params" in blobs else {}
    except ValueError as e:
        raise UserError(f"Ollama model {name!r}: its parameters are not JSON ({e})") from None
    stop = params.get("stop", []) if isinstance(params, dict) else []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise UserError(f"Ollama model {name!r}: its stop parameter {stop!r} is not a list of strings")
    return OllamaModel(name=name, model=blob("model"), projector=blob("projector"),
                       digests={"lm": blobs["model"], "mmproj": blobs["projector"]},
                       system=read_small_text(blob("system"), "system prompt") if "system" in blobs else None,
                       stop=stop,
                       go_template=read_small_text(blob("template"), "template") if "template" in blobs else None)

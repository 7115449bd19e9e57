"""The bundle format: `edgelmm.json`, the one contract between export and runtime, as typed data.

A bundle is a folder: the manifest and the files it names (the vision graph, the language model, and
any extra file under a role of its own). `load_manifest(folder)` returns a `Manifest` or raises one
`BundleError` that names the field at fault; export builds a `Manifest` and `save_manifest` writes it
atomically; every other module reads bundles through this one. Validation and the JSON Schema in
docs/bundle.schema.json come from the same dataclass declarations below, so they cannot drift apart.
Plain dataclasses, not pydantic: the runtime stays small on edge devices. Torch-free.

Versioning (`format_version`):
- Adding an optional field (one with a default, which older runtimes ignore) or a file under a new role
  that the runtime does not need (as `mmproj`, read only by llama.cpp's own tools) keeps the version.
- A new value of an enumerated field (as the `letterbox` resize rule) keeps it too: an older runtime
  refuses the manifest, naming the field and the values it knows, and misreads nothing.
- Anything an older runtime would misread bumps it: a new required field or file role, a field renamed,
  removed or given another meaning or unit. A runtime refuses bundles newer than it reads, naming the
  upgrade, and keeps reading every older version.
Unknown fields are ignored when reading, so a bundle written by a newer edgelmm of the same version loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgelmm.errors import UserError
from edgelmm.fsutil import atomic_write_text, is_regular

MANIFEST = "edgelmm.json"
FORMAT = "edgelmm-bundle"
FORMAT_VERSION = 1
REQUIRED_ROLES = ("vision", "lm")  # what every runtime reads; other roles are extra files


class BundleError(UserError):
    """A bundle that is missing, damaged, malformed or from a newer edgelmm."""


def _min(value: float) -> dict:
    return {"minimum": value}


# ---- the format ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of the bundle: a name inside the folder, its size and sha256."""

    path: str
    size: int = field(metadata=_min(1))
    sha256: str = field(metadata={"pattern": "^[0-9a-f]{64}$"})


@dataclass(frozen=True, kw_only=True)
class VisionInput:
    """What the vision graph takes: one image as `pixel_values`, preprocessed as described."""

    name: str
    layout: str = field(default="NCHW", metadata={"enum": ["NCHW"]})
    dtype: str = field(default="float32", metadata={"enum": ["float32"]})
    channel_order: str = field(default="RGB", metadata={"enum": ["RGB"]})
    size: int = field(metadata={"minimum": 1, "maximum": 4096})
    resize: str = field(metadata={"enum": ["shortest_edge_crop", "squash", "letterbox"]})
    resample: str = field(metadata={"enum": ["bicubic", "bilinear", "nearest"]})
    mean: list[float] = field(metadata={"length": 3})
    std: list[float] = field(metadata={"length": 3, "nonzero": True})


@dataclass(frozen=True, kw_only=True)
class VisionOutput:
    """What it returns: `tokens` embeddings of `width` (the language model's hidden size)."""

    name: str
    tokens: int = field(metadata=_min(1))
    width: int = field(metadata=_min(1))
    importance: str | None = None  # a second output: each token's importance (B, N), for dropping tokens


@dataclass(frozen=True, kw_only=True)
class Vision:
    """The vision tower and projector as one ONNX graph (`files.vision`)."""

    precision: str = field(metadata={"enum": ["fp32", "fp16", "int8"]})
    input: VisionInput
    output: VisionOutput
    projector: str


@dataclass(frozen=True, kw_only=True)
class LanguageModel:
    """The language model as a GGUF file for llama.cpp (`files.lm`)."""

    architecture: str
    quant: str
    context_length: int = field(metadata=_min(1))
    vocab_size: int = field(metadata=_min(1))


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """How the model words a conversation: its chat template (Jinja2), where the image goes, what ends
    an answer."""

    chat_template: str
    image_placeholder: str = field(metadata={"minLength": 1})
    bos: str | None = None
    stop: list[str] = field(default_factory=list)
    system_prompt: str | None = None
    eos: str | None = None  # the template's `eos_token` (some templates close every turn with it)
    describe: str | None = None  # the question asked when none is given (a description for a blind user)
    describe_more: str | None = None  # the follow-up asking for the details a short description left out


@dataclass(frozen=True, kw_only=True)
class Generation:
    """Defaults for answers."""

    max_tokens: int = field(default=256, metadata=_min(1))
    temperature: float = field(default=0.0, metadata=_min(0))
    # An answer whose confidence is below this is said to be unsure (calibrated per model, see
    # benchmarks/confidence.py); None: the runtime's default.
    unsure_below: float | None = None


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where the bundle came from (informative; the runtime needs none of it)."""

    edgelmm_version: str
    source_checkpoint: str | None = None
    preset: str | None = None
    created: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A bundle's `edgelmm.json`."""

    format: str = field(default=FORMAT, metadata={"enum": [FORMAT]})
    format_version: int = field(default=FORMAT_VERSION, metadata=_min(1))
    files: dict[str, FileEntry]
    vision: Vision
    lm: LanguageModel
    prompt: Prompt
    generation: Generation = field(default_factory=Generation)
    provenance: Provenance

    def file(self, role: str) -> FileEntry:
        if role not in self.files:
            raise BundleError(f"the bundle has no {role} file")
        return self.files[role]

    def path(self, bundle: str | Path, role: str) -> Path:
        """The file of `role` inside `bundle`; a path or link leading outside the folder is refused."""
        return resolve_inside(bundle, self.file(role).path)

    @property
    def size(self) -> int:
        """Bytes of all files."""
        return sum(entry.size for entry in self.files.values())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Manifest:
        manifest = _parse(cls, data, "")
        missing = [role for role in REQUIRED_ROLES if role not in manifest.files]
        if missing:
            raise BundleError(f"manifest field files: no {' and no '.join(missing)} file")
        return manifest


# ---- reading and writing ---------------------------------------------------------------------------

def resolve_inside(bundle: str | Path, name: str) -> Path:
    """`bundle / name`, refusing a name that is absolute, climbs out, or is a link to outside."""
    folder = Path(bundle).resolve()
    pure = PurePosixPath(name)
    shown = repr(name if len(name) <= 80 else name[:77] + "...")
    if pure.is_absolute() or ".." in pure.parts or "\\" in name or "\0" in name or not name:
        raise BundleError(f"bundle file {shown} is not a plain name inside the bundle folder")
    try:
        path = (folder / pure).resolve()
        if not path.is_relative_to(folder):
            raise BundleError(f"bundle file {shown} leads outside the bundle folder")
        if path.exists() and not is_regular(path):
            raise BundleError(f"bundle file {shown} is not a regular file")
    except (OSError, ValueError) as e:  # too long for the file system, a loop of links, a lone surrogate
        raise BundleError(f"bundle file {shown} cannot be used: {getattr(e, 'strerror', None) or e}") from None
    return path


def is_bundle(path: str | Path) -> bool:
    """Whether `path` is a folder holding a manifest (a bundle, not a checkpoint)."""
    return (Path(path) / MANIFEST).is_file()


def load_manifest(bundle: str | Path) -> Manifest:
    """The manifest of a bundle folder, validated (not the files' hashes: see `check_files`)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not an edgelmm bundle: {MANIFEST} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{path} is not an edgelmm bundle manifest")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # JSON's \ud800 escapes decode to lone surrogates, which no file name or text holds
        raise BundleError(f"{path} holds text that is not valid Unicode") from None
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(f"{bundle} has bundle format {version}; this edgelmm reads up to {FORMAT_VERSION}: "
                          "upgrade edgelmm")
    try:
        return Manifest.from_dict(data)
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None


def save_manifest(bundle: str | Path, manifest: Manifest) -> Path:
    """Write the manifest into `bundle` atomically."""
    path = Path(bundle) / MANIFEST
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2))
    return path


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(folder: Path, name: str) -> FileEntry:
    path = folder / name
    return FileEntry(path=name, size=path.stat().st_size, sha256=sha256(path))


def check_files(bundle: str | Path, manifest: Manifest, hashes: bool = True) -> list[str]:
    """Problems with the bundle's files (missing, outside the folder, wrong size, wrong hash unless
    `hashes` is False); empty when all are intact."""
    problems = []
    for role, entry in manifest.files.items():
        try:
            path = resolve_inside(bundle, entry.path)
        except BundleError as e:
            problems.append(f"{role}: {e}")
            continue
        if not path.is_file():
            problems.append(f"{role} file {entry.path} is missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{role} file {entry.path} has {path.stat().st_size} bytes, expected {entry.size}")
        elif hashes and sha256(path) != entry.sha256:
            problems.append(f"{role} file {entry.path} fails its sha256 check")
    return problems


# ---- validation and JSON Schema, both from the declarations above ----------------------------------

def _parse(hint, value, where: str, meta: typing.Mapping = types.MappingProxyType({})):
    """`value` checked against the type `hint` (and the field's metadata); errors name the field."""
    name = where or "manifest"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise BundleError(f"manifest field {name} must be an object")
        kwargs = {}
        hints = typing.get_type_hints(hint)
        for f in dataclasses.fields(hint):
            sub = f"{where}.{f.name}" if where else f.name
            if f.name in value:
                kwargs[f.name] = _parse(hints[f.name], value[f.name], sub, f.metadata)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"manifest field {sub} is missing")
        return hint(**kwargs)
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None and type(None) in args:
            return None
        return _parse(next(a for a in args if a is not type(None)), value, where, meta)
    if origin is dict:
        if not isinstance(value, dict):
            raise BundleError(f"manifest field {name} must be an object")
        return {str(k): _parse(args[1], v, f"{name}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise BundleError(f"manifest field {name} must be a list")
        items = [_parse(args[0], v, f"{name}[{k}]") for k, v in enumerate(value)]
        if "length" in meta and len(items) != meta["length"]:
            raise BundleError(f"manifest field {name} must hold {meta['length']} values, not {len(items)}")
        if meta.get("nonzero") and any(v == 0 for v in items):
            raise BundleError(f"manifest field {name} must not hold 0")
        return items
    return _scalar(hint, value, name, meta)


_KINDS = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _scalar(hint, value, name: str, meta: typing.Mapping):
    if isinstance(value, bool) and hint is not bool or not isinstance(value, _KINDS[hint]):
        raise BundleError(f"manifest field {name} must be {_TYPE_WORDS[hint]}, not {json.dumps(value)[:40]}")
    if hint is float:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise BundleError(f"manifest field {name} must be a finite number")
    if "minimum" in meta and value < meta["minimum"]:
        raise BundleError(f"manifest field {name} must be at least {meta['minimum']}, not {value}")
    if "maximum" in meta and value > meta["maximum"]:
        raise BundleError(f"manifest field {name} must be at most {meta['maximum']}, not {value}")
    if "enum" in meta and value not in meta["enum"]:
        raise BundleError(f"manifest field {name} must be one of {', '.join(map(str, meta['enum']))}, not {value!r}")
    if "minLength" in meta and len(value) < meta["minLength"]:
        raise BundleError(f"manifest field {name} must not be empty")
    if "pattern" in meta:
        import re

        if not re.fullmatch(meta["pattern"], value):
            raise BundleError(f"manifest field {name} is malformed")
    return value


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _schema(hint, meta: typing.Mapping = types.MappingProxyType({})) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = dataclasses.fields(hint)
        out = {"type": "object", "description": " ".join(hint.__doc__.split()),
               "properties": {f.name: _schema(hints[f.name], f.metadata) for f in fields},
               "required": [f.name for f in fields
                            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]}
        return out
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return {"anyOf": [_schema(inner, meta), {"type": "null"}]}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1])}
    if origin is list:
        out = {"type": "array", "items": _schema(args[0])}
        if "length" in meta:
            out["minItems"] = out["maxItems"] = meta["length"]
        if meta.get("nonzero"):
            out["items"] = {**out["items"], "not": {"const": 0}}
        return out
    out = {"type": _JSON_TYPES[hint]}
    out.update({k: v for k, v in meta.items() if k in ("minimum", "maximum", "enum", "minLength", "pattern")})
    return out


def json_schema() -> dict:
    """The manifest's JSON Schema (docs/bundle.schema.json), for readers of bundles in other languages."""
    schema = _schema(Manifest)
    schema["properties"]["files"]["required"] = list(REQUIRED_ROLES)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "edgelmm-bundle.schema.json", "title": f"edgelmm bundle manifest ({MANIFEST}), format "
            f"version {FORMAT_VERSION}", **schema}

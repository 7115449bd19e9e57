"""The bundle manifest, `edgelmm.json`: the only contract between export and runtime.

It names every file (with size and sha256), says how to preprocess images and what the vision graph
returns, describes the language model and the prompt (chat template, image placeholder, stop strings)
and records where the bundle came from. The runtime reads these values from here, never from code.
Torch-free: the runtime imports it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgelmm.errors import UserError

MANIFEST = "edgelmm.json"
FORMAT = "edgelmm-bundle"
FORMAT_VERSION = 1


class BundleError(UserError):
    """A bundle that is missing, damaged or from a newer edgelmm."""


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(folder: Path, name: str) -> dict:
    path = folder / name
    return {"path": name, "size": path.stat().st_size, "sha256": sha256(path)}


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of a bundle folder, checked for format and version (not for file hashes)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not an edgelmm bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not an edgelmm bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{bundle} has bundle format {version}; this edgelmm reads up to {FORMAT_VERSION}: "
                          "upgrade edgelmm")
    return manifest


def check_files(bundle: str | Path, manifest: dict, hashes: bool = True) -> list[str]:
    """Problems with the bundle's files (missing, wrong size, wrong hash unless `hashes` is False);
    empty when all are intact."""
    bundle = Path(bundle)
    problems = []
    for role, entry in manifest.get("files", {}).items():
        path = bundle / entry["path"]
        if not path.is_file():
            problems.append(f"{role} file {entry['path']} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{role} file {entry['path']} has {path.stat().st_size} bytes, expected {entry['size']}")
        elif hashes and sha256(path) != entry["sha256"]:
            problems.append(f"{role} file {entry['path']} fails its sha256 check")
    return problems

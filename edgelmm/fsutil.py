"""Atomic writes: an interrupted job never leaves something that looks complete.

Outputs are built under a temporary name in the same folder and renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgelmm.errors import UserError


def check_output_dir(path: str | Path, force: bool) -> Path:
    """Refuse an existing non-empty output folder unless `force`; fail before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"output folder {path} already exists; use --force to replace it")
    return path


@contextmanager
def atomic_output_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`, on failure it is removed."""
    path = check_output_dir(path, force)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot write to {path.parent}: {e.strerror}") from None
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

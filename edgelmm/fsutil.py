"""Files as untrusted input and outputs written atomically.

`open_regular` opens only regular files, without waiting: a FIFO, a device or a socket given as an
image or a model file would otherwise block forever or read endlessly. Outputs are built under a
temporary name (`.NAME.tmp-PID`) in the same folder and renamed into place at the end; one left by a
killed process is removed by the next run that writes the same output.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgelmm.errors import UserError


def open_regular(path: str | Path, what: str = "file"):
    """`path` opened for binary reading, or a UserError when it is missing or not a regular file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without a writer
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a {what}") from None
    except PermissionError:
        raise UserError(f"cannot open {path}: permission denied") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise UserError(f"cannot open {path}: {getattr(e, 'strerror', None) or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):  # opening a directory read-only succeeds on Linux
            raise UserError(f"{path} is a directory, not a {what}")
        raise UserError(f"{path} is a pipe, device or socket, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_small_text(path: str | Path, what: str = "file", limit: int = 1_000_000) -> str:
    """A UTF-8 text file of at most `limit` bytes (a template, a manifest from elsewhere), or one
    UserError naming `what` when it is missing, larger or not UTF-8."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: {what} over {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not UTF-8 text") from None


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):
        return False


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
    remove_stale(path)
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
    remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary siblings of `path` (`.NAME.tmp-PID`, `.NAME.old-PID`) that processes no longer
    running left behind (killed with SIGKILL, say); return them."""
    removed = []
    for sibling in path.parent.glob(f".{path.name}.*-*") if path.parent.is_dir() else []:
        kind, _, pid = sibling.name[len(path.name) + 2:].rpartition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, alive
    return True

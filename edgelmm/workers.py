"""Worker processes that never outlive the process that started them.

A pool's workers wait for work on a queue; when their parent is killed outright (SIGKILL, the
out-of-memory killer), nothing tells them, and they would wait, or render, forever. Passed as a pool's
`initializer`, `die_with_parent` asks Linux to kill the worker with its parent (prctl
PR_SET_PDEATHSIG) and, elsewhere, watches the parent's pid from a daemon thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def die_with_parent(parent: int) -> None:
    """Make this worker end when process `parent` (its creator's pid) ends."""
    if sys.platform.startswith("linux") and _linux_parent_death_signal():
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
        return
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="edgelmm-parent-watch").start()


def _linux_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)

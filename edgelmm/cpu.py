"""What this machine's CPU says about itself (Linux /proc/cpuinfo), for choices measured per machine.

Nothing is decided from these values by name: they key measurements (the runtime's calibration),
count cores and tell whether an instruction set exists. Empty on systems without /proc/cpuinfo.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first processor's fields ("model name", "flags", "siblings", "cpu cores", ...)."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        if not line.strip():
            break  # the first processor's block ends here
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    return set(cpu_info().get("flags", "").split())

import subprocess
import sys

import pytest

import edgelmm
from edgelmm.errors import UnknownNameError
from edgelmm.registry import Registry


def test_import_pulls_in_neither_torch_nor_transformers():
    code = ("import sys, edgelmm, edgelmm.cli, edgelmm.imaging, edgelmm.presets; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_is_a_string():
    assert edgelmm.__version__.count(".") == 2


def test_registry_rejects_duplicates_and_lists_valid_names():
    reg = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 3)
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; valid: a, b"):
        reg.get("c")
    assert reg.get("b") == 2 and reg.names() == ["a", "b"]

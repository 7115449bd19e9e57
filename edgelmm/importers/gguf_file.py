"""Reading a GGUF file with gguf-py, with every fault of the file reported as one user error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelmm.errors import UserError, first_line
from edgelmm.fsutil import is_regular


class GGUFError(UserError):
    """A file that is not a GGUF file of the kind asked for, or a damaged one."""


class GGUFFile:
    """The key-value metadata and tensors of one GGUF file (tensors memory-mapped, read on demand)."""

    def __init__(self, path: str | Path) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.exists():
            raise GGUFError(f"{self.path}: no such file")
        if not is_regular(self.path):
            raise GGUFError(f"{self.path} is not a regular file")
        try:
            reader = GGUFReader(str(self.path))
            self.fields = {name: field.contents() for name, field in reader.fields.items()}
            self.tensors = {t.name: t for t in reader.tensors}
        except Exception as e:  # gguf-py raises what numpy or struct say about a bad file; it is the file's fault
            raise GGUFError(f"{self.path} is not a readable GGUF file ({first_line(e)})") from None

    @property
    def architecture(self) -> str | None:
        return self.fields.get("general.architecture")

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def require(self, key: str):
        if key not in self.fields:
            raise GGUFError(f"{self.path.name} has no {key} field")
        return self.fields[key]

    def tensor(self, name: str) -> np.ndarray:
        """Tensor `name` as float32, in torch's dimension order (gguf lists dimensions innermost first)."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        t = self.tensors.get(name)
        if t is None:
            raise GGUFError(f"{self.path.name} has no tensor {name}")
        shape = tuple(int(d) for d in reversed(t.shape))
        try:
            data = np.asarray(t.data) if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) \
                else dequantize(t.data, t.tensor_type)
            return data.astype(np.float32).reshape(shape)
        except (NotImplementedError, ValueError) as e:
            raise GGUFError(f"{self.path.name}: tensor {name} cannot be read ({first_line(e)})") from None

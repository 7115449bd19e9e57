"""`vision.onnx` opened in ONNX Runtime and held to its manifest: a damaged file, or a graph whose inputs
and outputs are not what the manifest says, is a clear bundle error at load, not a failure at the
first image. `edgelmm verify` reports the same problems. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from edgelmm.bundle_format import BundleError, Vision
from edgelmm.errors import first_line


def open_vision_graph(path: Path, spec: Vision, options=None):
    """An ONNX Runtime session of `path`, checked against `spec`."""
    session = open_session(path, options)
    problems = signature_problems(session, spec, path.name)
    if problems:
        raise BundleError(f"bundle {path.parent} does not match its manifest: {'; '.join(problems)}")
    return session


def open_session(path: Path, options=None):
    """An ONNX Runtime session of `path` on the CPU, or a BundleError saying the file is damaged."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own exception types, for files it cannot parse
        raise BundleError(f"{path.name} is damaged: ONNX Runtime cannot open it ({first_line(e)})") from None


def signature_problems(session, spec: Vision, name: str) -> list[str]:
    """How the graph's inputs and outputs differ from what the manifest says (empty: they agree)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if [i.name for i in inputs] != [spec.input.name]:
        problems.append(f"{name} takes {[i.name for i in inputs]}, the manifest says {spec.input.name!r}")
    elif inputs[0].shape[1:] != [3, spec.input.size, spec.input.size]:
        problems.append(f"{name} expects input shape {inputs[0].shape}, the manifest says size {spec.input.size}")
    names = [o.name for o in outputs]
    expected = [spec.output.name] + ([spec.output.importance] if spec.output.importance else [])
    if names != expected:
        problems.append(f"{name} returns {names}, the manifest says {expected}")
    elif outputs[0].shape[1:] != [spec.output.tokens, spec.output.width]:
        problems.append(f"{name} returns shape {outputs[0].shape}, the manifest says "
                        f"{spec.output.tokens} x {spec.output.width}")
    return problems


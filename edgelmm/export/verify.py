"""`edgelmm verify`: a bundle's files are intact and both runtimes open them as the manifest says.

Torch-free: it runs where the bundle will run.
"""

from __future__ import annotations

from pathlib import Path

from edgelmm.bundle_format import LanguageModel, Vision, check_files, load_manifest
from edgelmm.quiet import native_stderr_silenced


def verify_bundle(bundle: str | Path, verbose: bool = False) -> list[str]:
    """Every problem found (empty: the bundle is good). A missing or unreadable manifest raises."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    problems = check_files(bundle, manifest)
    if problems:
        return problems  # the runtimes would only repeat what the hashes already say
    problems += _check_vision(manifest.path(bundle, "vision"), manifest.vision)
    mmproj = manifest.path(bundle, "mmproj") if "mmproj" in manifest.files else None
    problems += _check_lm(manifest.path(bundle, "lm"), manifest.lm, verbose, mmproj)
    return problems


def _check_vision(path: Path, spec: Vision) -> list[str]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own exception types
        return [f"ONNX Runtime cannot open {path.name}: {e}"]
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if [i.name for i in inputs] != [spec.input.name]:
        problems.append(f"{path.name} takes {[i.name for i in inputs]}, the manifest says {spec.input.name!r}")
    else:
        shape = inputs[0].shape
        if shape[1:] != [3, spec.input.size, spec.input.size]:
            problems.append(f"{path.name} expects input shape {shape}, the manifest says size {spec.input.size}")
    out_shape = outputs[0].shape
    if out_shape[1:] != [spec.output.tokens, spec.output.width]:
        problems.append(f"{path.name} returns shape {out_shape}, the manifest says "
                        f"{spec.output.tokens} x {spec.output.width}")
    names = [o.name for o in outputs]
    expected = [spec.output.name] + ([spec.output.importance] if spec.output.importance else [])
    if names != expected:
        problems.append(f"{path.name} returns {names}, the manifest says {expected}")
    return problems


def _check_lm(path: Path, spec: LanguageModel, verbose: bool, mmproj: Path | None) -> list[str]:
    """llama.cpp loads the LM with the manifest's vocabulary, and libmtmd its mmproj beside it."""
    import llama_cpp

    try:
        with native_stderr_silenced(not verbose):
            llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=1, verbose=verbose)
    except Exception as e:  # llama-cpp-python raises ValueError or RuntimeError on a bad file
        return [f"llama.cpp cannot load {path.name}: {e}"]
    problems = []
    if llm.n_vocab() != spec.vocab_size:
        problems.append(f"{path.name} has {llm.n_vocab()} tokens, the manifest says {spec.vocab_size}")
    if mmproj is not None:
        from edgelmm.runtime.mtmd import MtmdError, MtmdVision

        try:
            MtmdVision(mmproj, llm.model, verbose=verbose).close()
        except MtmdError as e:
            problems.append(str(e))
    llm.close()
    return problems

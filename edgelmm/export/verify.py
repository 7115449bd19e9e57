"""`edgelmm verify`: a bundle's files are intact and both runtimes open them as the manifest says.

Torch-free: it runs where the bundle will run.
"""

from __future__ import annotations

from pathlib import Path

from edgelmm.bundle_format import BundleError, LanguageModel, Vision, check_files, load_manifest
from edgelmm.chat import ChatFormat
from edgelmm.quiet import native_stderr_silenced


def verify_bundle(bundle: str | Path, verbose: bool = False) -> list[str]:
    """Every problem found (empty: the bundle is good). A missing or unreadable manifest raises."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    problems = check_files(bundle, manifest)
    if problems:
        return problems  # the runtimes would only repeat what the hashes already say
    try:
        ChatFormat.from_manifest(manifest.prompt)
    except BundleError as e:
        problems.append(str(e))
    problems += _check_vision(manifest.path(bundle, "vision"), manifest.vision)
    mmproj = manifest.path(bundle, "mmproj") if "mmproj" in manifest.files else None
    problems += _check_lm(manifest.path(bundle, "lm"), manifest.lm, verbose, mmproj)
    return problems


def _check_vision(path: Path, spec: Vision) -> list[str]:
    from edgelmm.runtime.vision_graph import open_session, signature_problems

    try:
        return signature_problems(open_session(path), spec, path.name)
    except BundleError as e:
        return [str(e)]


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

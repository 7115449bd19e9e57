"""`edgelmm export`: a checkpoint becomes a bundle folder (vision.onnx, the LM's .gguf, edgelmm.json).

The bundle is built under a temporary name and renamed at the end, so an interrupted export never
leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from edgelmm import __version__
from edgelmm.bundle_format import (Generation, LanguageModel, Manifest, Provenance, Vision, VisionInput, VisionOutput,
                                   file_entry, save_manifest)
from edgelmm.chat import ChatFormat
from edgelmm.errors import ConfigError
from edgelmm.fsutil import atomic_output_dir, check_output_dir
from edgelmm.quantize.gguf import ALL_TYPES, EXPORT_TYPES, QUANT_SOURCE, quantize_gguf
from edgelmm.quantize.onnx import VISION_PRECISIONS, convert_vision

DEFAULT_MAX_TOKENS = 256
VISION_FILE = "vision.onnx"


def check_exportable(parts) -> None:
    from edgelmm.export.gguf_lm import gguf_arch
    from edgelmm.modeling.vision_encoder import feature_depths

    gguf_arch(parts.model.config.text_config)
    feature_depths(parts.model.config)


def _check_options(quant: str, vision: str) -> None:
    if quant not in ALL_TYPES:
        raise ConfigError(f"unknown quantization {quant!r}; valid: {', '.join(ALL_TYPES)}")
    check_vision_precision(vision)


def check_vision_precision(vision: str) -> None:
    if vision not in VISION_PRECISIONS:
        raise ConfigError(f"unknown vision precision {vision!r}; valid: {', '.join(VISION_PRECISIONS)}")


def export_bundle(checkpoint: str | Path, out: str | Path, *, quant: str = "q4_k_m", vision: str = "fp32",
                  mmproj: bool = False, ollama: bool = False, force: bool = False, log=lambda message: None,
                  describe: str | None = None) -> Path:
    """Export `checkpoint` to the bundle folder `out`; returns its path."""
    from edgelmm.modeling import load_checkpoint

    _check_options(quant, vision)
    check_output_dir(out, force)  # before minutes of work, not only at the end
    parts = load_checkpoint(checkpoint)
    return write_bundle(parts, out, quant=quant, vision=vision, mmproj=mmproj, ollama=ollama, force=force, log=log,
                        source=checkpoint, describe=describe)


def write_bundle(parts, out: str | Path, *, quant: str = "q4_k_m", vision: str = "fp32", mmproj: bool = False,
                 ollama: bool = False, force: bool = False, log=lambda message: None, source: str | Path | None = None,
                 materialize=None, describe: str | None = None) -> Path:
    """Write the bundle of `parts` (ModelParts) to the folder `out`; returns its path.

    `mmproj` adds the vision tower and projector as llama.cpp's mmproj GGUF too; `ollama` adds it and
    an Ollama Modelfile. `log` is told each step
    as it starts. `source` is the checkpoint recorded as provenance; `materialize` goes to
    `export_gguf`, for a language model on the meta device.
    """
    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.export.mmproj import MMPROJ_FILE, check_mmproj, export_mmproj
    from edgelmm.export.ollama import go_template, write_modelfile
    from edgelmm.modeling.config import edgelmm_fields

    _check_options(quant, vision)
    check_exportable(parts)
    if mmproj or ollama:
        check_mmproj(parts)  # before minutes of work
    if ollama:
        go_template(ChatFormat.from_tokenizer(parts.tokenizer, parts.model.generation_config))
    config = parts.model.config
    lm_file = f"lm-{quant}.gguf"
    with atomic_output_dir(out, force) as tmp:
        vision_entry = write_vision_graph(parts.model, parts.image_spec, tmp, vision, log)
        if quant in EXPORT_TYPES:
            log(f"writing the language model to GGUF ({quant})")
            export_gguf(parts, tmp / lm_file, dtype=quant, materialize=materialize)
        else:
            source_file = tmp / f"lm-{QUANT_SOURCE}.gguf"
            log(f"writing the language model to GGUF ({QUANT_SOURCE}, for the quantizer)")
            export_gguf(parts, source_file, dtype=QUANT_SOURCE, materialize=materialize)
            log(f"quantizing the language model to {quant} with llama.cpp")
            quantize_gguf(source_file, tmp / lm_file, quant)
            source_file.unlink()
        roles = {"lm": lm_file}
        if mmproj or ollama:
            log("writing the vision tower and projector as llama.cpp's mmproj GGUF")
            roles["mmproj"] = export_mmproj(parts, tmp / MMPROJ_FILE).name
        chat = ChatFormat.from_tokenizer(parts.tokenizer, parts.model.generation_config)
        if ollama:
            log("writing the Ollama Modelfile")
            roles["modelfile"] = write_modelfile(tmp, chat, lm_file, MMPROJ_FILE, DEFAULT_MAX_TOKENS, 0.0)
        finish_bundle(
            tmp, roles, vision=vision_entry,
            lm=LanguageModel(architecture=config.text_config.model_type, quant=quant,
                             context_length=config.text_config.max_position_embeddings,
                             vocab_size=config.text_config.vocab_size),
            prompt=chat, source=str(Path(source).resolve()) if source else None, preset=edgelmm_fields(config).preset,
            log=log)
    return Path(out)


def write_vision_graph(model, image_spec, folder: Path, precision: str, log) -> Vision:
    """Export the vision half of `model` (a LLaVA model, or anything laid out as `VisionEncoder` reads
    one) to `folder`/vision.onnx at `precision`; returns the manifest's `vision`."""
    from edgelmm.export.onnx_vision import IMPORTANCE_NAME, OUTPUT_NAME, export_vision_onnx
    from edgelmm.modeling.config import edgelmm_fields
    from edgelmm.modeling.projectors import num_image_tokens
    from edgelmm.modeling.vision_encoder import has_token_scores

    log("exporting the vision tower and projector to ONNX")
    config = model.config
    importance = has_token_scores(config)  # per-token scores, where the projector keeps the tokens apart
    exported = export_vision_onnx(model, folder / "vision-fp32.onnx", image_spec.size, importance)
    convert_vision(exported, folder / VISION_FILE, precision)
    exported.unlink()
    return Vision(precision=precision, input=VisionInput(name="pixel_values", **image_spec.to_dict()),
                  output=VisionOutput(name=OUTPUT_NAME, tokens=num_image_tokens(config),
                                      width=config.text_config.hidden_size,
                                      importance=IMPORTANCE_NAME if importance else None),
                  projector=edgelmm_fields(config).projector)


def finish_bundle(folder: Path, roles: dict[str, str], *, vision: Vision, lm: LanguageModel, prompt: ChatFormat,
                  source: str | None, preset: str | None = None, describe: str | None = None, log) -> None:
    """Hash the files in `folder` and write the manifest, validated as a runtime will read it. `roles`
    names the files beside vision.onnx ("lm", and "mmproj" and "modelfile", for llama.cpp's and Ollama's
    tools: the runtime does not read them); any other file is external data of the vision graph.
    `describe` is the question asked when none is given."""
    log("hashing the files and writing the manifest")
    roles = {"vision": VISION_FILE, **roles}
    files = {role: file_entry(folder, name) for role, name in roles.items()}
    for extra in sorted(p.name for p in folder.iterdir() if p.name not in roles.values()):
        files[f"vision_data:{extra}"] = file_entry(folder, extra)  # external weights of a large graph
    manifest = Manifest(
        files=files, vision=vision, lm=lm, prompt=dataclasses.replace(prompt.to_manifest(), describe=describe),
        generation=Generation(max_tokens=DEFAULT_MAX_TOKENS, temperature=0.0),
        provenance=Provenance(edgelmm_version=__version__, source_checkpoint=source, preset=preset,
                              created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))
    save_manifest(folder, Manifest.from_dict(manifest.to_dict()))

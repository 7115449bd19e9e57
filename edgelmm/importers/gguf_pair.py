"""`edgelmm import gguf`: a llama.cpp pair (an LM GGUF and an mmproj GGUF) becomes a bundle.

The mmproj's tower and projector are rebuilt in torch and exported to ONNX as our own exports are; the
language model is used unchanged, copied or hard-linked into the bundle (a bundle reads only files
inside its folder, so a symbolic link would be refused), and the mmproj goes beside it for llama.cpp's
own tools. The prompt comes from the LM's metadata (chat template, BOS, EOS, EOT), or from `--template`.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

from edgelmm.bundle_format import BundleError, LanguageModel
from edgelmm.chat import IMAGE_PLACEHOLDER, ChatFormat
from edgelmm.chat_templates import TEMPLATES, template_named
from edgelmm.errors import UserError
from edgelmm.fsutil import atomic_output_dir, check_output_dir
from edgelmm.importers.gguf_file import GGUFError, GGUFFile
from edgelmm.importers.lm import LmFacts, read_lm


def chat_format(facts: LmFacts, template: str | None, lm_name: str, *, system: str | None = None,
                stop: list[str] | tuple = (), missing_hint: str = "") -> ChatFormat:
    """How the imported model words a conversation: `template` (a name or a file) if given, else the
    GGUF's own chat template; `system` and `stop` come from the model's distribution (Ollama's)."""
    stop = [*facts.stop, *stop]
    if template:
        named = template_named(template)
        text, stop = named.template, stop + list(named.stop)
    elif facts.chat_template:
        text = facts.chat_template
    else:
        raise GGUFError(f"{lm_name} has no chat template; give one with --template NAME|FILE "
                        f"(names: {', '.join(TEMPLATES)}){missing_hint}")
    chat = ChatFormat(template=text, image_placeholder=IMAGE_PLACEHOLDER, bos=facts.bos, eos=facts.eos,
                      stop=sorted(set(stop)), system_prompt=system)
    try:
        chat = chat.checked()
        # llama.cpp puts BOS before the prompt where the GGUF asks for it; edgelmm's runtime writes only
        # what the template renders, so the template gets it in front where it lacks one.
        if facts.add_bos and facts.bos and not chat.render_text([("q", None)]).startswith(facts.bos):
            chat = dataclasses.replace(chat, template="{{ bos_token }}" + chat.template).checked()
    except BundleError as e:
        raise UserError(f"{'--template ' + template if template else lm_name}: {e}") from None
    return chat


def _place(source: Path, target: Path, link: bool) -> None:
    if not link:
        shutil.copyfile(source, target)
        return
    try:
        os.link(source, target)
    except OSError as e:
        why = "it is on another file system" if e.errno == errno.EXDEV else e.strerror
        raise UserError(f"cannot hard-link {source} into the bundle ({why}); leave out --link to copy it") from None


def import_gguf(lm: str | Path, mmproj: str | Path, out: str | Path, *, vision: str = "fp32", link: bool = False,
                template: str | None = None, force: bool = False, log=lambda message: None,
                system: str | None = None, stop=(), missing_hint: str = "", digests: dict | None = None,
                source: str | None = None, describe: str | None = None) -> Path:
    """Write a bundle at `out` from the language model `lm` and the vision part `mmproj` (GGUF files).

    `system`, `stop` and `missing_hint` go to `chat_format`; `digests` ("lm", "mmproj" -> sha256) are
    checked against the files as copied; `source` names them in the provenance."""
    from edgelmm.bundle_format import load_manifest
    from edgelmm.export.bundle import check_vision_precision, finish_bundle, write_vision_graph
    from edgelmm.importers.mmproj import read_mmproj

    check_vision_precision(vision)
    check_output_dir(out, force)
    lm, mmproj = Path(lm), Path(mmproj)
    log("reading the GGUF files")
    facts = read_lm(GGUFFile(lm))
    half = read_mmproj(GGUFFile(mmproj))
    if half.width != facts.width:
        raise GGUFError(f"{mmproj.name} makes {half.width}-wide image embeddings but {lm.name} reads "
                        f"{facts.width}-wide ones: they are not a pair")
    chat = chat_format(facts, template, lm.name, system=system, stop=stop, missing_hint=missing_hint)
    lm_file, mmproj_file = f"lm-{facts.quant}.gguf", "mmproj.gguf"
    with atomic_output_dir(out, force) as tmp:
        vision_entry = write_vision_graph(half, half.image_spec, tmp, vision, log)
        log(f"{'linking' if link else 'copying'} the language model and the mmproj")
        _place(lm, tmp / lm_file, link)
        _place(mmproj, tmp / mmproj_file, link)
        finish_bundle(tmp, {"lm": lm_file, "mmproj": mmproj_file}, vision=vision_entry,
                      lm=LanguageModel(architecture=facts.architecture, quant=facts.quant,
                                       context_length=facts.context_length, vocab_size=facts.vocab_size),
                      prompt=chat, source=source or f"{lm.resolve()} + {mmproj.resolve()}", describe=describe,
                      log=log)
        files = load_manifest(tmp).files
        for role, digest in (digests or {}).items():
            if files[role].sha256 != digest:  # hashed as copied: a damaged blob never becomes a bundle
                raise UserError(f"the {role} file's sha256 is {files[role].sha256}, not {digest} as its "
                                "manifest says: the file is damaged")
    return Path(out)

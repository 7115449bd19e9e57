"""`edgelmm export`, `import`, `show`, `verify` and `quantize report`: making and checking bundles."""

from __future__ import annotations

import json

import click

from edgelmm.cli.app import app
from edgelmm.errors import UserError
from edgelmm.quantize.gguf import ALL_TYPES
from edgelmm.quantize.onnx import VISION_PRECISIONS

_vision_option = click.option("--vision", default="fp32", show_default=True, type=click.Choice(VISION_PRECISIONS),
                              help="Vision graph precision.")
_describe_option = click.option(
    "--describe", metavar="TEXT",
    help="The question asked when none is given (a description prompt written for the model's users).")


@app.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--quant", default="q4_k_m", show_default=True, type=click.Choice(ALL_TYPES),
              help="Language-model weights.")
@_vision_option
@click.option("--mmproj", is_flag=True,
              help="Also write the vision tower and projector as llama.cpp's mmproj GGUF (mmproj-f16.gguf).")
@click.option("--ollama", is_flag=True,
              help="Also write an Ollama Modelfile (and the mmproj it names): `ollama create NAME -f Modelfile`.")
@_describe_option
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def export(checkpoint: str, out: str, quant: str, vision: str, mmproj: bool, ollama: bool, describe: str | None,
           force: bool) -> None:
    """Export CHECKPOINT to a bundle: vision.onnx + the LM as GGUF + edgelmm.json."""
    from edgelmm.export.bundle import export_bundle

    path = export_bundle(checkpoint, out, quant=quant, vision=vision, mmproj=mmproj, ollama=ollama, force=force,
                         describe=describe,
                         log=lambda message: click.echo(message, err=True))
    click.echo(f"wrote bundle {path}")


@app.command()
@click.argument("bundle", type=click.Path())
def show(bundle: str) -> None:
    """Print a readable summary of BUNDLE's manifest."""
    from edgelmm.bundle_format import load_manifest

    m = load_manifest(bundle)
    vis, lm, files = m.vision, m.lm, m.files
    lines = [f"bundle      {bundle} (format {m.format_version}, {m.size / 1e6:.1f} MB)",
             f"vision      {files['vision'].path} ({vis.precision}, projector {vis.projector}): "
             f"{vis.input.size}x{vis.input.size} {vis.input.resize} -> {vis.output.tokens} tokens x {vis.output.width}",
             f"language    {files['lm'].path} ({lm.architecture}, {lm.quant}, context {lm.context_length}, "
             f"vocabulary {lm.vocab_size})",
             *([f"mmproj      {files['mmproj'].path} (the vision part for llama.cpp's own multimodal tools)"]
               if "mmproj" in files else []),
             *([f"ollama      {files['modelfile'].path} (in the bundle folder: ollama create NAME -f Modelfile)"]
               if "modelfile" in files else []),
             f"prompt      image placeholder {m.prompt.image_placeholder}, stops at {', '.join(m.prompt.stop)}",
             f"generation  max {m.generation.max_tokens} tokens, temperature {m.generation.temperature}",
             f"made by     edgelmm {m.provenance.edgelmm_version} from {m.provenance.source_checkpoint} "
             f"at {m.provenance.created}"]
    click.echo("\n".join(lines))


@app.command()
@click.argument("bundle", type=click.Path())
@click.pass_context
def verify(ctx: click.Context, bundle: str) -> None:
    """Check BUNDLE's file hashes and that ONNX Runtime and llama.cpp open its files."""
    from edgelmm.export.verify import verify_bundle

    problems = verify_bundle(bundle, verbose=ctx.obj["verbose"])
    if problems:
        raise UserError(f"{bundle} failed verification: " + "; ".join(problems))
    click.echo(f"{bundle}: ok")


@app.group()
def quantize() -> None:
    """Quantization tools."""


@quantize.command("report")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Eval items whose prompts to use.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Prompts to compare.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the report as Markdown.")
def quantize_report(checkpoint: str, data: str, limit: int, json_out: str | None, md_out: str | None) -> None:
    """Size, top-1 agreement and KL vs fp32 of every GGUF quantization level of CHECKPOINT."""
    from edgelmm.fsutil import atomic_write_text
    from edgelmm.eval.quantization import quantization_report, report_markdown

    report = quantization_report(checkpoint, data, limit=limit, log=lambda m: click.echo(m, err=True))
    markdown = report_markdown(report)
    click.echo(markdown)
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))
    if md_out:
        atomic_write_text(md_out, markdown + "\n")


@app.group("import")
def import_() -> None:
    """Bundles from models made elsewhere: llama.cpp GGUF pairs, a local Ollama store."""


_template_option = click.option(
    "--template", metavar="NAME|FILE",
    help="Chat template when the language model's GGUF has none: a name (phi3, chatml, llama3, vicuna) "
         "or a Jinja2 file.")
_link_option = click.option("--link", is_flag=True,
                            help="Hard-link the GGUF files into the bundle instead of copying them (same file system).")


@import_.command("gguf")
@click.argument("lm", type=click.Path())
@click.argument("mmproj", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@_vision_option
@_link_option
@_template_option
@_describe_option
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def import_gguf(lm: str, mmproj: str, out: str, vision: str, link: bool, template: str | None, describe: str | None,
                force: bool) -> None:
    """A bundle from LM (a language-model GGUF) and MMPROJ (its vision part, llama.cpp's mmproj GGUF)."""
    from edgelmm.importers.gguf_pair import import_gguf as run

    path = run(lm, mmproj, out, vision=vision, link=link, template=template, force=force, describe=describe,
               log=lambda message: click.echo(message, err=True))
    click.echo(f"wrote bundle {path}")


@import_.command("ollama")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--store", type=click.Path(file_okay=False),
              help="Ollama's model folder (default: $OLLAMA_MODELS, else ~/.ollama/models).")
@_vision_option
@_link_option
@_template_option
@_describe_option
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def import_ollama(name: str, out: str, store: str | None, vision: str, link: bool, template: str | None,
                  describe: str | None, force: bool) -> None:
    """A bundle from the Ollama model NAME (as `ollama list` shows it) in the local store."""
    from edgelmm.importers.gguf_pair import import_gguf as run
    from edgelmm.importers.ollama import find_model

    model = find_model(name, store)
    hint = model.template_hint()
    path = run(model.model, model.projector, out, vision=vision, link=link, template=template, force=force,
               log=lambda message: click.echo(message, err=True), system=model.system, stop=model.stop,
               missing_hint=f"; Ollama's own template looks like {hint!r}" if hint else "",
               digests=model.digests, source=f"ollama:{name}", describe=describe)
    click.echo(f"wrote bundle {path}")

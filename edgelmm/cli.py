"""The `edgelmm` command.

Errors a user can fix print one line on stderr and exit with code 2; `-v` adds the details. Heavy
libraries (torch, transformers) are imported only inside the commands that need them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from edgelmm import __version__
from edgelmm.errors import UserError
from edgelmm.quantize.gguf import ALL_TYPES
from edgelmm.quantize.onnx import VISION_PRECISIONS

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgelmm")
@click.option("-v", "--verbose", is_flag=True, help="Show details and tracebacks.")
@click.pass_context
def app(ctx: click.Context, verbose: bool) -> None:
    """edgelmm: small LLaVA-style multimodal models, trained, exported and run on the edge."""
    ctx.obj = {"verbose": verbose}


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@app.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def presets(as_json: bool) -> None:
    """List the model presets: parts, image tokens and parameters per part."""
    from edgelmm.modeling.build import preset_summary
    from edgelmm.presets import PRESETS

    rows = [preset_summary(name) for name in PRESETS]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("preset", "vision", "projector", "lm", "image tokens", "vision params", "projector params",
              "lm params", "total")
    table = [header] + [(r["name"], f"{r['vision']}@{r['image_size']}", r["projector"], r["lm"],
                         str(r["image_tokens"]), *(_human(r["params"][k]) for k in ("vision", "projector", "lm", "total")))
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@app.command()
@click.option("--preset", help="A preset (random weights).")
@click.option("--vision", help="Vision tower: a preset name or a local CLIP/SigLIP folder.")
@click.option("--llm", help="Language model: a preset name or a local causal-LM folder.")
@click.option("--projector", help="Projector type [default: the preset's, else mlp2x_gelu].")
@click.option("--projector-arg", "projector_args", multiple=True, metavar="KEY=INT",
              help="Projector argument, e.g. pool=2 or num_queries=64 (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Checkpoint folder to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for the new weights.")
@click.option("--force", is_flag=True, help="Replace an existing folder.")
def build(preset, vision, llm, projector, projector_args, out, seed, force) -> None:
    """Build a model (preset or local pretrained parts, new projector) and save it as a checkpoint."""
    import torch

    from edgelmm.modeling import build_model, save_checkpoint

    args = {}
    for item in projector_args:
        key, sep, value = item.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise click.BadParameter(f"{item!r} is not KEY=INT", param_hint="--projector-arg")
        args[key] = int(value)
    torch.manual_seed(seed)
    parts = build_model(preset, vision=vision, llm=llm, projector=projector, projector_args=args or None)
    path = save_checkpoint(parts, out, force=force)
    click.echo(f"wrote {path} ({parts.num_image_tokens} image tokens per image)")


@app.group()
def data() -> None:
    """Make and inspect training data."""


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n-images", default=1000, show_default=True, type=click.IntRange(min=1), help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; different seeds give disjoint images.")
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Rendering processes [default: CPUs].")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth(out: str, n_images: int, seed: int, workers: int | None, force: bool, quiet: bool) -> None:
    """Write an EdgeScenes data set: images/, scenes.json, stage1.json, stage2.json, eval.json."""
    from edgelmm.data.edgescenes import synthesize

    path = synthesize(out, n_images, seed, workers=workers, force=force, progress=not quiet)
    click.echo(f"wrote {n_images} images and their data to {path}")


def _train_options(f):
    """Options shared by `edgelmm train` (one stage) and `edgelmm train recipe`.

    --data and --out are required, but checked in the commands: click would demand them from
    `edgelmm train` before it sees the `recipe` subcommand."""
    options = [
        click.option("--data", type=click.Path(), help="Data folder (EdgeScenes layout) or a LLaVA JSON file."),
        click.option("--out", type=click.Path(file_okay=False), help="Output folder."),
        click.option("--image-folder", type=click.Path(file_okay=False), help="Images [default: DATA/images]."),
        click.option("--seed", default=0, show_default=True, type=int, help="Random seed."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."),
        click.option("--lora", is_flag=True, help="instruct: LoRA adapters on the LM instead of full tuning."),
        click.option("--unfreeze-vision", is_flag=True, help="instruct: train the vision tower too."),
        click.option("--vision-lr-scale", type=click.FloatRange(min=0, min_open=True),
                     help="The tuned vision tower's learning rate, relative to --lr."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Epochs."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Batch size per device."),
        click.option("--grad-accum", type=click.IntRange(min=1), help="Gradient accumulation steps."),
        click.option("--save-every", type=click.IntRange(min=1), help="Steps between checkpoints."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N records."),
        click.option("--skip-bad", is_flag=True, help="Skip (and count) broken data records."),
        click.option("--deepspeed", type=click.Path(dir_okay=False, exists=True),
                     help="DeepSpeed config (edgelmm/train/configs/zero2.json, zero3.json)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _options_from(kw: dict):
    from edgelmm.train.run import TrainOptions

    for name in ("data", "out"):
        if kw.get(name) is None:
            raise click.UsageError(f"Missing option '--{name}'.")
    overrides = {k: kw[k] for k in ("lr", "epochs", "batch_size", "grad_accum", "vision_lr_scale") if kw.get(k) is not None}
    return TrainOptions(seed=kw["seed"], resume=kw["resume"], lora=kw["lora"], unfreeze_vision=kw["unfreeze_vision"],
                        save_every=kw["save_every"], limit=kw["limit"], skip_bad=kw["skip_bad"],
                        image_folder=kw["image_folder"], progress=not kw["quiet"], overrides=overrides or None,
                        deepspeed=kw["deepspeed"])


@app.group(invoke_without_command=True)
@click.option("--stage", help="Stage to run: clip, lm, align or instruct.")
@click.option("--preset", help="Start from this preset, built from scratch.")
@click.option("--model", "model_path", type=click.Path(), help="Start from this checkpoint.")
@_train_options
@click.pass_context
def train(ctx: click.Context, stage: str | None, preset: str | None, model_path: str | None, **kw) -> None:
    """Train one stage (--stage), or every stage with `edgelmm train recipe`."""
    if ctx.invoked_subcommand:
        return
    from edgelmm.train.run import run_stage
    from edgelmm.train.stages import STAGES

    if stage is None:
        raise click.UsageError("give --stage (clip, lm, align, instruct) or use `edgelmm train recipe`")
    STAGES.get(stage)
    options = _options_from(kw)
    final = run_stage(stage, data=kw["data"], out=kw["out"], preset=preset, model=model_path, options=options)
    click.echo(f"stage {stage} finished: {final}")


@train.command()
@click.option("--preset", required=True, help="The preset to train from scratch.")
@_train_options
def recipe(preset: str, **kw) -> None:
    """Run every stage of a preset in order; finished stages are skipped, an interrupted one resumes."""
    from edgelmm.train.run import run_recipe

    final = run_recipe(preset, data=kw["data"], out=kw["out"], options=_options_from(kw),
                       log=lambda message: click.echo(message, err=True))
    click.echo(f"recipe finished: {final}")


@app.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Evaluation items (eval.json).")
@click.option("--backend", default="auto", show_default=True,
              help="For a bundle: the runtime backend that answers.")
@click.option("--image-folder", type=click.Path(file_okay=False), help="Images [default: next to DATA/images].")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N items.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Questions per batch (checkpoints).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (bundles).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def evaluate_command(ctx: click.Context, model_path: str, data: str, backend: str, image_folder: str | None,
                     limit: int | None, batch_size: int, threads: int | None, json_out: str | None,
                     quiet: bool) -> None:
    """Exact-match accuracy per question type and POPE metrics of MODEL on DATA. MODEL is a checkpoint
    (answered in batches by PyTorch) or a bundle (answered by the runtime, with --backend)."""
    from edgelmm.bundle_format import MANIFEST
    from edgelmm.eval.evaluate import checkpoint_answerer, evaluate, read_eval_items, runtime_answerer
    from edgelmm.fsutil import atomic_write_text

    items = read_eval_items(data, limit)
    if (Path(model_path) / MANIFEST).is_file():
        from edgelmm.runtime import load

        answer = runtime_answerer(load(model_path, backend=backend, n_threads=threads, verbose=ctx.obj["verbose"]))
    else:
        if backend not in ("auto", "torch"):
            raise UserError(f"{model_path} is a checkpoint, which only the torch backend runs; export it to a "
                            "bundle for the others")
        from edgelmm.modeling import load_checkpoint

        answer = checkpoint_answerer(load_checkpoint(model_path))
    report = evaluate(answer, items, image_folder or Path(data).parent / "images", batch_size, progress=not quiet)
    click.echo(format_report(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))


DEFAULT_QUESTION = "Describe the image."


def _runtime_options(command):
    """Options shared by `ask` and `chat`."""
    for option in reversed([
        click.option("--model", "-m", "model_path", type=click.Path(), help="Bundle folder [default: $EDGELMM_MODEL, "
                     "else the built-in demo model]."),
        click.option("--backend", default="auto", show_default=True,
                     help="llamacpp, torch, or one an installed package adds (auto: llamacpp)."),
        click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(min=1)),
        click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0)),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: one per physical core]."),
        click.option("--ctx", "n_ctx", type=click.IntRange(min=16), help="A fixed context in positions [default: "
                     "sized to the question, growing with a conversation]."),
        click.option("-v", "--verbose", is_flag=True, help="Show library logs and tracebacks."),
    ]):
        command = option(command)
    return command


def _open_model(ctx: click.Context, model_path, backend, threads, n_ctx, verbose):
    from edgelmm.runtime import load

    ctx.obj["verbose"] = ctx.obj["verbose"] or verbose
    return load(model_path, backend=backend, n_threads=threads, n_ctx=n_ctx, verbose=ctx.obj["verbose"])


@app.command()
@click.argument("image", type=click.Path())
@click.argument("question", required=False, default=DEFAULT_QUESTION)
@_runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print the answer and timings as JSON.")
@click.pass_context
def ask(ctx: click.Context, image: str, question: str, model_path, backend, max_tokens, temperature, threads,
        n_ctx, verbose, as_json) -> None:
    """Answer QUESTION about IMAGE (default: "Describe the image."; "-" reads it from stdin)."""
    if question == "-":
        question = sys.stdin.read().strip()
    model = _open_model(ctx, model_path, backend, threads, n_ctx, verbose)
    if as_json:
        answer = model.answer(image, question, max_tokens=max_tokens, temperature=temperature)
        click.echo(json.dumps({**answer.to_dict(), "model": str(model.path), "backend": model.backend.info()}))
        return
    for chunk in model.ask(image, question, max_tokens=max_tokens, temperature=temperature, stream=True):
        click.echo(chunk, nl=False)
        sys.stdout.flush()
    click.echo()


@app.command()
@click.argument("image", type=click.Path())
@_runtime_options
@click.pass_context
def chat(ctx: click.Context, image: str, model_path, backend, max_tokens, temperature, threads, n_ctx,
         verbose) -> None:
    """A conversation about IMAGE: one question per line; an empty line or end of input stops."""
    model = _open_model(ctx, model_path, backend, threads, n_ctx, verbose)
    conversation = model.chat(image)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about the image. An empty line ends the conversation.", err=True)
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        try:
            for chunk in conversation.ask(line, max_tokens=max_tokens, temperature=temperature, stream=True):
                click.echo(chunk, nl=False)
                sys.stdout.flush()
        except UserError as e:  # a question too long for what is left of the context: say so, go on
            click.echo(f"error: {e}", err=True)
        click.echo()


def format_report(report: dict) -> str:
    lines = [f"exact match  {report['exact_match']:.1%}  ({report['n']} questions)"]
    lines += [f"  {t:<9}  {r['exact_match']:.1%}  ({r['n']})" for t, r in report["per_type"].items()]
    if "pope" in report:
        p = report["pope"]
        lines.append(f"POPE  accuracy {p['accuracy']:.1%}  precision {p['precision']:.1%}  recall {p['recall']:.1%}"
                     f"  F1 {p['f1']:.3f}  yes-ratio {p['yes_ratio']:.1%}")
        for split in ("random", "popular", "adversarial"):
            if split in p:
                lines.append(f"  {split:<11}  F1 {p[split]['f1']:.3f}  accuracy {p[split]['accuracy']:.1%}")
    return "\n".join(lines)


@app.command()
@click.option("--model", "-m", "model_path", type=click.Path(), help="Bundle folder [default: $EDGELMM_MODEL, "
              "else the built-in demo model].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: one per physical core].")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration record as JSON.")
def calibrate(model_path, threads, as_json) -> None:
    """Measure llama.cpp's settings for a bundle on this machine (again) and remember the fastest."""
    from edgelmm.bundle_format import BundleError, load_manifest
    from edgelmm.runtime.calibration import tuned_settings
    from edgelmm.runtime.llama_engine import EngineError, EngineSettings, default_threads
    from edgelmm.runtime.model import default_model

    bundle = Path(model_path) if model_path else default_model()
    manifest = load_manifest(bundle)
    try:
        settings, record = tuned_settings(manifest.path(bundle, "lm"), manifest.file("lm").sha256,
                                          EngineSettings(n_threads=threads or default_threads()),
                                          manifest.vision.output.tokens, force=True)
    except EngineError as e:
        raise BundleError(f"{bundle}: {e}") from None
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"{bundle}: {settings.n_threads} threads, {record['image_tokens']} image tokens")
    for name, figures in record["measured"].items():
        shown = figures.get("error") or (f"load {figures['load_s']:.2f} s, prefill {figures['prefill_tok_s']:.1f} "
                                         f"tok/s, decode {figures['decode_tok_s']:.1f} tok/s")
        click.echo(f"  {name:10} {shown}")
    click.echo(f"chosen: {'repack' if settings.repack else 'no_repack'}")


@app.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--quant", default="q4_k_m", show_default=True, type=click.Choice(ALL_TYPES),
              help="Language-model weights.")
@click.option("--vision", default="fp32", show_default=True, type=click.Choice(VISION_PRECISIONS),
              help="Vision graph precision.")
@click.option("--mmproj", is_flag=True,
              help="Also write the vision tower and projector as llama.cpp's mmproj GGUF (mmproj-f16.gguf).")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
def export(checkpoint: str, out: str, quant: str, vision: str, mmproj: bool, force: bool) -> None:
    """Export CHECKPOINT to a bundle: vision.onnx + the LM as GGUF + edgelmm.json."""
    from edgelmm.export.bundle import export_bundle

    path = export_bundle(checkpoint, out, quant=quant, vision=vision, mmproj=mmproj, force=force,
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
    from edgelmm.quantize.report import quantization_report, report_markdown

    report = quantization_report(checkpoint, data, limit=limit, log=lambda m: click.echo(m, err=True))
    markdown = report_markdown(report)
    click.echo(markdown)
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))
    if md_out:
        atomic_write_text(md_out, markdown + "\n")


def _quiet_libraries() -> None:
    """Library chatter (load reports, per-file progress bars) only with -v."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (an embedding program): tell it directly
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 internal error, 2 user error)."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in args)
    if not verbose:
        _quiet_libraries()
    try:
        code = app.main(args=args, prog_name="edgelmm", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort:
        click.echo("edgelmm: interrupted", err=True)
        return 130
    except click.ClickException as e:  # bad flags and values
        click.echo(f"edgelmm: error: {e.format_message()}", err=True)
        return EXIT_USER_ERROR
    except UserError as e:
        if verbose:
            traceback.print_exc()
        click.echo(f"edgelmm: error: {e}", err=True)
        return EXIT_USER_ERROR
    except OSError as e:  # the file system said no (disk full, permission denied): not a bug
        if verbose:
            traceback.print_exc()
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"edgelmm: error: {e.strerror or e}{where}", err=True)
        return EXIT_USER_ERROR
    except Exception as e:  # a bug in edgelmm
        if verbose:
            traceback.print_exc()
        click.echo(f"edgelmm: internal error: {type(e).__name__}: {e} (run with -v for details)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

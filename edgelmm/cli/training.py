"""`edgelmm data`, `edgelmm train` and `edgelmm eval`: data, the training stages and accuracy."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import click

from edgelmm import options
from edgelmm.cli.app import Checked, app
from edgelmm.errors import UserError


@app.group()
def data() -> None:
    """Make and inspect training data."""


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--n-images", default=1000, show_default=True, type=click.IntRange(min=1), help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; different seeds give disjoint images.")
@click.option("--workers", default=None, type=Checked(int, options.check_processes),
              help="Rendering processes [default: CPUs].")
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
    flags = [
        click.option("--data", type=click.Path(), help="Data folder (EdgeScenes layout) or a LLaVA JSON file."),
        click.option("--out", type=click.Path(file_okay=False), help="Output folder."),
        click.option("--image-folder", type=click.Path(file_okay=False), help="Images [default: DATA/images]."),
        click.option("--seed", default=0, show_default=True, type=int, help="Random seed."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."),
        click.option("--lora", is_flag=True, help="instruct: LoRA adapters on the LM instead of full tuning."),
        click.option("--unfreeze-vision", is_flag=True, help="instruct: train the vision tower too."),
        click.option("--vision-lr-scale",
                     type=Checked(float, partial(options.check_positive, name="the vision learning-rate scale")),
                     help="The tuned vision tower's learning rate, relative to --lr."),
        click.option("--lr", type=Checked(float, partial(options.check_positive, name="the learning rate")),
                     help="Learning rate."),
        click.option("--epochs", type=Checked(float, partial(options.check_positive, name="epochs")), help="Epochs."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Batch size per device."),
        click.option("--position-loss", type=click.FloatRange(min=0),
                     help="clip: weight of the loss that makes each patch name its own row and column."),
        click.option("--dense-loss", type=click.FloatRange(min=0),
                     help="clip: weight of the loss that makes each patch name the object it lies on."),
        click.option("--grad-accum", type=click.IntRange(min=1), help="Gradient accumulation steps."),
        click.option("--save-every", type=click.IntRange(min=1), help="Steps between checkpoints."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N records."),
        click.option("--skip-bad", is_flag=True, help="Skip (and count) broken data records."),
        click.option("--deepspeed", type=click.Path(dir_okay=False, exists=True),
                     help="DeepSpeed config (edgelmm/train/configs/zero2.json, zero3.json)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for flag in reversed(flags):
        f = flag(f)
    return f


def _options_from(kw: dict):
    from edgelmm.train.run import TrainOptions

    for name in ("data", "out"):
        if kw.get(name) is None:
            raise click.UsageError(f"Missing option '--{name}'.")
    tunable = ("lr", "epochs", "batch_size", "grad_accum", "vision_lr_scale", "position_loss", "dense_loss")
    overrides = {k: kw[k] for k in tunable if kw.get(k) is not None}
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
@click.option("--threads", type=Checked(int, options.check_threads), help="CPU threads (bundles).")
@click.option("--image-tokens", type=int, help="Bundles: read only this many image tokens [default: all].")
@click.option("--merge", default=0, show_default=True, type=int, help="Bundles: of those, merged ones.")
@click.option("--selection", default="importance", show_default=True, type=click.Choice(["importance", "random"]),
              help="Bundles: which image tokens are kept (random: the control).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def evaluate_command(ctx: click.Context, model_path: str, data: str, backend: str, image_folder: str | None,
                     limit: int | None, batch_size: int, threads: int | None, image_tokens: int | None,
                     merge: int, selection: str, json_out: str | None, quiet: bool) -> None:
    """Exact-match accuracy per question type and POPE metrics of MODEL on DATA. MODEL is a checkpoint
    (answered in batches by PyTorch) or a bundle (answered by the runtime, with --backend)."""
    from edgelmm.bundle_format import is_bundle
    from edgelmm.eval.evaluate import checkpoint_answerer, evaluate, read_eval_items, runtime_answerer
    from edgelmm.fsutil import atomic_write_text

    items = read_eval_items(data, limit)
    if is_bundle(model_path):
        from edgelmm.runtime import load

        answer = runtime_answerer(load(model_path, backend=backend, n_threads=threads, image_tokens=image_tokens,
                                       merge=merge, selection=selection, verbose=ctx.obj["verbose"]))
    else:
        if image_tokens is not None:
            raise UserError("--image-tokens applies to bundles (the runtime); export the checkpoint first")
        if backend not in ("auto", "torch"):
            raise UserError(f"{model_path} is a checkpoint, which only the torch backend runs; export it to a "
                            "bundle for the others")
        from edgelmm.modeling import load_checkpoint

        answer = checkpoint_answerer(load_checkpoint(model_path))
    report = evaluate(answer, items, image_folder or Path(data).parent / "images", batch_size, progress=not quiet)
    click.echo(format_report(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))


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

"""`edgelmm presets` and `edgelmm build`: the model family and new checkpoints."""

from __future__ import annotations

import json

import click

from edgelmm.cli.app import app


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

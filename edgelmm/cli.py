"""The `edgelmm` command.

Errors a user can fix print one line on stderr and exit with code 2; `-v` adds the details. Heavy
libraries (torch, transformers) are imported only inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
import traceback

import click

from edgelmm import __version__
from edgelmm.errors import UserError

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 internal error, 2 user error)."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in args)
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

"""The `edgelmm` command: `main()` runs it and turns errors into exit codes.

Commands live by group: models (presets, build), training (data, train, eval), bundles (export, import,
show, verify, quantize), runtime (ask, chat, calibrate), server (serve). A user's mistake is one line on stderr and exit code
2; `-v` adds the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from edgelmm.cli import bundles, models, runtime, server, training  # noqa: F401 (they register their commands)
from edgelmm.cli.app import EXIT_USER_ERROR, app
from edgelmm.errors import UserError


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

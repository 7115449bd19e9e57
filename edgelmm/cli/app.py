"""The `edgelmm` command group and what its commands share.

Errors a user can fix print one line on stderr and exit with code 2; `-v` adds the details. Heavy
libraries (torch, transformers) are imported only inside the commands that need them.
"""

from __future__ import annotations

import click

from edgelmm import __version__

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgelmm")
@click.option("-v", "--verbose", is_flag=True, help="Show details and tracebacks.")
@click.pass_context
def app(ctx: click.Context, verbose: bool) -> None:
    """edgelmm: small LLaVA-style multimodal models, trained, exported and run on the edge."""
    ctx.obj = {"verbose": verbose}

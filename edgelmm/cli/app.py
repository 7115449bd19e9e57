"""The `edgelmm` command group and what its commands share.

Errors a user can fix print one line on stderr and exit with code 2; `-v` adds the details. Heavy
libraries (torch, transformers) are imported only inside the commands that need them.
"""

from __future__ import annotations

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


class Checked(click.ParamType):
    """A flag's value read as `kind` (int or float) and checked by one of `edgelmm.options`' checks, the
    same the API applies."""

    def __init__(self, kind: type, check) -> None:
        self.kind, self.check, self.name = kind, check, kind.__name__

    def convert(self, value, param, ctx):
        try:
            return self.check(self.kind(value))
        except ValueError:
            self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}", param, ctx)
        except UserError as e:
            self.fail(str(e), param, ctx)

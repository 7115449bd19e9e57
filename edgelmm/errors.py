"""Errors a user can cause and fix (bad input, bad flag, bad file).

The CLI turns these into one line on stderr and exit code 2; anything else is a bug in edgelmm.
"""


class UserError(Exception):
    """A problem with what the user gave us, explained in one line."""


class UnknownNameError(UserError, KeyError):
    """A name looked up in a registry does not exist."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class ConfigError(UserError):
    """A model configuration that cannot be built (bad sizes, unsupported combination)."""


class CheckpointError(UserError):
    """A checkpoint folder that is missing, incomplete or not an edgelmm/LLaVA checkpoint."""


class DataError(UserError):
    """A data record or data folder that cannot be used; the message names the record."""


def first_line(error: BaseException) -> str:
    """A library's error message cut to its first line (some explain themselves over several), for
    wrapping into a UserError's one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

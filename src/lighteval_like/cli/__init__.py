"""The command line: click commands, the entry points they call, and the override files."""

from lighteval_like.cli.commands import main

__all__ = ["main"]

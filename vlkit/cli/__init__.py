"""The ``vlkit`` command and the seeds' command lines, one module per command group."""
from vlkit.cli.commands import main

__all__ = ["main"]

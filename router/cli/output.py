"""What the commands print, when whoever reads it may stop early (`ccgate doctor --json | head`)."""

from __future__ import annotations

import os
import sys


def emit(text: str) -> None:
    """Print `text`; a reader that went away (a closed pipe) ends the output quietly, as for any
    Unix tool, instead of a BrokenPipeError traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit: point it at nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

"""argparse types shared by the ``taskforge`` subcommands: a bad value is refused when the
command line is parsed, with a message argparse prefixes with the option's name."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (a count of processes, jobs, requests in flight, runs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value

"""Helpers shared by the subcommands: the parser, argument types, path checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

__all__ = [
    "EXIT_ANOMALY",
    "EXIT_OK",
    "EXIT_USAGE",
    "Parser",
    "Progress",
    "UsageError",
    "add_verbose",
    "bootstrap",
    "check_reachable",
    "int_at_least",
    "output_path",
    "rate",
]

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with one clear error line, a usage hint and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message}\n(see '{self.prog} --help' for usage)\n",
        )


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value:g}")
    return value


def bootstrap(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = int(100 * done / total)
        if pct == self.last:
            return
        self.last = pct
        width = 30
        filled = width * done // total
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {done}/{total}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last >= 0:
            self.stream.write("\n")
            self.stream.flush()


class UsageError(Exception):
    """Bad usage found after parsing: one line, exit status 2."""


def output_path(option: str, path: str | None) -> None:
    """Refuse, before any work, an output file that cannot be written: its folder
    missing, or the path a directory."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path!r}: folder {folder!r} is not writable")


def add_verbose(parser: Any) -> None:
    """``-v`` accepted after the subcommand too (``offsetledger simulate -v``)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log the processors' warnings",
    )


def check_reachable(bootstrap: str, timeout: float = 10.0) -> None:
    """Raise BrokerError unless the broker at ``bootstrap`` answers."""
    from offsetledger.adapters.confluent_admin import topic_partitions
    from offsetledger.core import BrokerError

    try:
        topic_partitions(bootstrap, "__offsetledger_probe", timeout=timeout)
    except BrokerError as exc:
        if exc.name == "UNKNOWN_TOPIC_OR_PART":
            return  # the broker answered
        raise

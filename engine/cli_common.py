"""Pieces the subcommands share (``messages``, ``archive``, ``ris``, ...)."""

from __future__ import annotations

import argparse
from typing import Any

CONFIG_HELP = "the engine's config (for the database)"


def store_command(
    sub: Any, name: str, func: Any, help_text: str, config_help: str = CONFIG_HELP
) -> argparse.ArgumentParser:
    """A subcommand reading the store of ``--config``, with ``--json``; its parser for more arguments."""
    c = sub.add_parser(name, help=help_text)
    c.add_argument("--config", "-c", required=True, help=config_help)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=func)
    return c

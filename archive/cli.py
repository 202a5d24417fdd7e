"""(being written)"""

from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``archive`` subcommands (none yet)."""

"""(being written)"""

from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``ris`` subcommands (none yet)."""

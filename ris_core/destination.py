"""(being written)"""

from typing import Any


def register(registry: Any) -> None:
    """Register this module's component types (none yet)."""

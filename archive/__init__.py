"""The filesystem archive: DICOM instances and HL7 messages on disk, atomic, checksummed, indexed.

Registered as the engine's ``archive`` service (built from the top-level ``archive:`` section)
and as the ``archive`` destination type (HL7 messages a channel routes to it).
"""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Register the archive service and the ``archive`` destination."""
    from archive import archive, destination

    archive.register(registry)
    destination.register(registry)

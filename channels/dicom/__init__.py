"""DICOM connectors (pynetdicom; its imports stay inside this package).

``dicom_scp`` (source: C-ECHO, C-STORE into the archive, C-FIND/C-MOVE/C-GET from it) and
``dicom_scu`` (destination: C-STORE of archived instances to a remote AE).
"""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Register the DICOM connector types (imports pynetdicom only when called)."""
    from channels.dicom import scp, scu

    scp.register(registry)
    scu.register(registry)

"""The RIS core: patients, orders and their IHE Scheduled Workflow states, the Modality Worklist,
MPPS, images matched to orders, reports, and the messages sent back to the HIS/EHR.

Registered as the engine's ``ris`` service (built from the top-level ``ris:`` section) and as
the ``ris`` destination type (channels route ADT, orders, reports and stored-instance events to it).
"""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Register the RIS service and the ``ris`` destination."""
    from ris_core import destination, service

    service.register(registry)
    destination.register(registry)

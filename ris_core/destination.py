"""The ``ris`` destination: hands HL7 messages and ``dicom.stored`` events to the RIS service.

Success is ``done(True, "AA")``. A RIS refusal (illegal transition, unknown order, merged patient,
a message the RIS cannot use) is a *final* ``DeliveryError`` with the RIS's reason: retrying cannot
help, and with ``ack: {mode: after_delivery}`` the sender gets AE with that reason in ERR-8. Any
other failure (the store unreachable, a bug) is a non-final error the queue retries.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from engine.components import BuildContext, DeliveryError, DeliveryInfo, Done
from engine.config.models import ComponentConfig
from engine.event import Event

log = logging.getLogger("radbridge.ris")


class RisDestinationConfig(ComponentConfig):
    """Deliver to the RIS core (ADT, ORM^O01, OMI^O23, ORU^R01, ``dicom.stored`` events)."""

    type: Literal["ris"] = "ris"


class RisDestination:
    """Gives each delivery to ``ctx.ris`` and maps its answer to the queue's outcome."""

    def __init__(self, config: RisDestinationConfig, ctx: BuildContext) -> None:
        self.ris = ctx.ris
        self.channel = ctx.channel

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> None:
        """Nothing to close."""

    def send_cb(self, content: str, info: DeliveryInfo, done: Done) -> None:
        """Apply *content* in the RIS; ``done(True, "AA")``, or ``done(False, DeliveryError)``."""
        if self.ris is None:
            done(False, DeliveryError("the RIS service is not configured"))
            return
        text = content.lstrip()
        if text.startswith("{"):
            try:
                event = Event.from_text(text)
            except ValueError as exc:
                done(False, DeliveryError(f"RIS: {exc}", code="AR", final=True))
                return
            d = self.ris.handle_event(event, message_id=info.message_id)
        else:
            d = self.ris.handle_hl7(text, message_id=info.message_id, origin=f"channel:{self.channel}")

        def answered(result: Any) -> None:
            if result.ok:
                done(True, "AA")
            else:
                done(False, DeliveryError(result.reason, code=result.code or "AE", final=True))

        def failed(failure: Any) -> None:
            log.warning("ris delivery %s (message %s) failed: %s", info.delivery_id, info.message_id,
                        failure.type.__name__)  # fmt: skip
            done(False, DeliveryError(f"RIS error: {failure.type.__name__}"))

        d.addCallbacks(answered, failed)


def register(registry: Any) -> None:
    """Register the ``ris`` destination type."""
    registry.add("destination", "ris", RisDestinationConfig, RisDestination, offline=True)

"""MLLP connectors: ``mllp_listener`` (source) and ``mllp_sender`` (destination)."""

from typing import Any


def register(registry: Any) -> None:
    """Register the MLLP connector types."""
    from channels.mllp.listener import MLLPListener, MLLPListenerConfig
    from channels.mllp.sender import MLLPSender, MLLPSenderConfig

    registry.add("source", "mllp_listener", MLLPListenerConfig, MLLPListener)
    registry.add("destination", "mllp_sender", MLLPSenderConfig, MLLPSender)

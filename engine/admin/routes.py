"""Every route of the admin API, in one list (the OpenAPI file documents the same set; a test compares them)."""

from __future__ import annotations

from engine.admin.server import Route


def all_routes() -> list[Route]:
    """The routes of every admin module."""
    from engine.admin import routes_auth, routes_channels, routes_health, routes_messages, routes_ris

    return [
        *routes_health.routes(),
        *routes_auth.routes(),
        *routes_channels.routes(),
        *routes_messages.routes(),
        *routes_ris.routes(),
    ]

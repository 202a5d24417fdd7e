"""The web console: server-rendered pages at ``/console`` over the admin API's handlers (see docs/console.md)."""

from engine.console.site import mount

__all__ = ["mount"]

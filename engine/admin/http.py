"""HTTP plumbing of the admin API: JSON errors, bounded request bodies, safe paths, query parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from twisted.web import server

JSON = b"application/json; charset=utf-8"


class ApiError(Exception):
    """An answer other than success: HTTP *status* with a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class LimitedRequest(server.Request):
    """A request that keeps at most ``max_body`` bytes of its body and marks it ``too_large`` beyond."""

    max_body = 1_048_576

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - twisted.web naming
        """Refuse to buffer a body announced larger than the limit."""
        self.too_large = length is not None and length > self.max_body
        self.body_size = 0
        super().gotLength(0 if self.too_large else length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - twisted.web naming
        """Keep body bytes up to the limit; past it, drop them and mark the request."""
        self.body_size += len(data)
        if self.body_size > self.max_body:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)


def encode(value: Any) -> bytes:
    """JSON bytes of *value* (floats named ``*_at`` stay numbers; bytes are not expected)."""
    return json.dumps(value, default=str, separators=(",", ":")).encode("utf-8")


def path_segments(raw_path: bytes) -> list[str]:
    """The decoded segments of a request path; :class:`ApiError` 400 on traversal or control characters."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise ApiError(400, "the path must be ASCII (percent-encode the rest)") from None
    segments = [unquote(s) for s in text.split("/")[1:]]
    for seg in segments:
        if seg in (".", "..") or any(c in seg for c in "/\\\x00") or any(ord(c) < 32 for c in seg):
            raise ApiError(400, "invalid path: no '.', '..', slashes or control characters in a segment")
    return segments


def read_json(request: Any) -> dict[str, Any]:
    """The request body as a JSON object (``{}`` when empty); 413, 415 or 400 when it cannot be."""
    if getattr(request, "too_large", False):
        raise ApiError(413, f"request body larger than {request.max_body} bytes")
    request.content.seek(0)
    body = request.content.read()
    if not body.strip():
        return {}
    ctype = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if ctype != b"application/json":
        raise ApiError(415, "the request body must be application/json")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return value


def query_args(request: Any) -> dict[str, str]:
    """Query parameters, last value wins."""
    return {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in request.args.items() if v}


def int_arg(args: dict[str, str], name: str, default: int, *, lo: int = 1, hi: int = 1000) -> int:
    """An integer query parameter in [lo, hi]; 400 otherwise."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return value


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC of epoch seconds (``None`` stays ``None``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else None


def when_arg(args: dict[str, str], name: str) -> float | None:
    """Epoch seconds of an ISO 8601 time or an age such as ``2h`` (see ``messages search --since``); 400 if neither."""
    from engine.cli_messages import parse_when

    raw = args.get(name)
    try:
        return parse_when(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected an ISO 8601 time or an age such as 30m, 2h, 7d") from None

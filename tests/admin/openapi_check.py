"""Validation of real admin API responses against ``engine/admin/openapi.yaml`` with openapi-core."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

import engine.admin

SPEC_PATH = Path(engine.admin.__file__).with_name("openapi.yaml")


@lru_cache(maxsize=1)
def spec() -> OpenAPI:
    """The parsed (and itself validated) OpenAPI document."""
    return OpenAPI.from_file_path(str(SPEC_PATH))


class _Request:
    """openapi-core's Request protocol over what the test client sent."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> None:
        parts = urlsplit(url)
        self.host_url = "http://127.0.0.1:9180"
        self.path = parts.path
        self.full_url_pattern = self.host_url + parts.path
        self.method = method.lower()
        self.body = body
        self.content_type = headers.get("Content-Type", "application/json")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query)), header=Headers(headers), cookie=ImmutableMultiDict()
        )


class _Response:
    """openapi-core's Response protocol over a parsed test response."""

    def __init__(self, resp: Any) -> None:
        self.status_code = resp.status
        self.data = resp.body
        self.content_type = (resp.header("content-type") or "").split(";", 1)[0]
        self.headers = Headers([(k, v) for k, vs in resp.headers.items() for v in vs])


def check_response(method: str, url: str, resp: Any, headers: dict[str, str], body: bytes | None) -> None:
    """Raise when *resp* does not match the documented response of that operation (unknown paths are skipped)."""
    if not _documented(method, url):  # no operation to compare with: it must be a documented Error
        import json

        assert resp.status >= 400 and set(json.loads(resp.body)) == {"error"}, resp.body
        return
    spec().validate_response(_Request(method, url, headers, body), _Response(resp))


def _documented(method: str, url: str) -> bool:
    from engine.admin.http import ApiError, path_segments
    from engine.admin.routes import all_routes
    from engine.admin.server import Router

    try:
        Router(all_routes()).match(method, path_segments(urlsplit(url).path.encode()))
    except ApiError:
        return False
    return True

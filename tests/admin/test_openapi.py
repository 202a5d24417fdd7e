"""The OpenAPI document: valid OpenAPI 3.1, and the same set of operations as the server's routes."""

from __future__ import annotations

import yaml

from engine.admin.routes import all_routes
from tests.admin.openapi_check import SPEC_PATH, spec


def test_the_document_is_valid_openapi() -> None:
    """openapi-core loads (and so validates) the file."""
    assert spec().spec["openapi"] == "3.1.0"


def test_every_route_is_documented_and_nothing_else() -> None:
    """Each (method, path) of the server has an operation in the file, and the file documents no other."""
    doc = yaml.safe_load(SPEC_PATH.read_text())
    documented = {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m != "parameters"}
    assert documented == {(r.method, r.template) for r in all_routes()}


def test_public_operations_are_marked_without_security() -> None:
    """Operations without credentials in the server are exactly those with ``security: []`` in the file."""
    doc = yaml.safe_load(SPEC_PATH.read_text())
    public = {(m.upper(), p) for p, item in doc["paths"].items() for m, op in item.items()
              if m != "parameters" and op.get("security") == []}  # fmt: skip
    assert public == {(r.method, r.template) for r in all_routes() if r.role is None}


def test_an_invalid_response_is_caught() -> None:
    """The validator used by every test rejects a response that breaks the schema (it can fail)."""
    import pytest

    from tests.admin.conftest import Response
    from tests.admin.openapi_check import check_response

    bad = Response(200, {"content-type": ["application/json"]}, b'{"status": "maybe"}')
    with pytest.raises(Exception, match="(?i)valid"):
        check_response("GET", "/healthz", bad, {}, None)

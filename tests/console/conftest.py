"""Fixtures for the console: the admin test App with the console mounted, and a browser-like form client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from engine.admin.server import AdminApi, AdminResource, AdminSite
from engine.console import mount
from engine.console.web import CSRF_COOKIE
from tests.admin.conftest import PASSWORD, Client, Env, Response, make_env


class MountedApi:
    """What the admin test client needs of an AdminApi, with the console mounted on its Site."""

    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.store = api.store

    def site(self) -> AdminSite:
        """The admin Site as the lead's mount change builds it: console in front of the API resource."""
        return AdminSite(mount(self.api, AdminResource(self.api)), self.api.config.max_body, reactor=self.api.reactor)


@dataclass
class Browser:
    """A console client: submits forms as a browser does, keeps the cookies, knows the CSRF token."""

    client: Client

    def get(self, path: str) -> Response:
        """GET *path*."""
        return self.client.get(path)

    def post(self, path: str, fields: dict[str, Any] | None = None, *, csrf: bool = True) -> Response:
        """POST a urlencoded form, with the session's CSRF token unless *csrf* is false."""
        data = dict(fields or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.client.request("POST", path, body=urlencode(data).encode(), headers=headers)

    @property
    def csrf(self) -> str:
        """The CSRF token the console keeps in its cookie."""
        return self.client.cookies.get(CSRF_COOKIE.decode(), "")

    def login(self, username: str, password: str = PASSWORD) -> Response:
        """Log in through the console form."""
        return self.post("/console/login", {"username": username, "password": password}, csrf=False)


@dataclass
class ConsoleEnv:
    """The admin test Env and a way to make browsers of each role."""

    env: Env

    def browser(self, role: str | None = None) -> Browser:
        """A new browser, logged in as the user of *role* (none: anonymous)."""
        b = Browser(Client(MountedApi(self.env.api), self.env.clock, validate=False))  # type: ignore[arg-type]
        if role is not None:
            resp = b.login(role)
            assert resp.status == 303, resp.body
        return b


def text(resp: Response) -> str:
    """The body as text."""
    return resp.body.decode("utf-8")


def make_cenv(tmp_path: Path, extra: str = "") -> Iterator[ConsoleEnv]:
    """The admin test App (see tests/admin/conftest.py) with the console mounted; stopped afterwards."""
    for env in make_env(tmp_path, extra):
        yield ConsoleEnv(env)


@pytest.fixture
def cenv(tmp_path: Path) -> Iterator[ConsoleEnv]:
    """The admin test App (channels his, flaky, spare) with the console mounted."""
    yield from make_cenv(tmp_path)

"""``radbridge users add|list|passwd|token|disable|enable`` and ``radbridge audit``: the admin tables from the shell.

Passwords are read from the terminal (``getpass``) or, with ``--password-stdin``, one line of standard input;
never from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from engine.admin.schema import ROLES, VIEWER


def _store(args: argparse.Namespace) -> Any:
    from engine.cli import load_config
    from engine.store.store import Store

    vc = load_config(args.config, check_ports=False)
    if vc is None:
        raise SystemExit(1)
    return Store(vc.database_url, None, sqlite_synchronous=vc.root.store.sqlite_synchronous, writer_mode="thread")


def _run(args: argparse.Namespace, fn: Any, *a: Any, write: bool = False) -> Any:
    store = _store(args)
    try:
        return (store.transact_sync if write else store.read_sync)(fn, *a)
    finally:
        store.engine.dispose()


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("radbridge users: the passwords differ")
    return first


def _fail(exc: Exception) -> int:
    print(f"radbridge users: {exc}", file=sys.stderr)
    return 1


def cmd_add(args: argparse.Namespace) -> int:
    """Create a user with a role."""
    from engine.admin.users import UserError, thd_add_user

    try:
        user = _run(args, thd_add_user, args.username, _password(args), args.role, time.time(), write=True)
    except UserError as exc:
        return _fail(exc)
    print(f"user {user['username']} added ({user['role']})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List users."""
    from engine.admin.users import thd_list_users

    users = _run(args, thd_list_users)
    if args.json:
        print(json.dumps(users))
        return 0
    for u in users:
        print(f"{u['username']:32} {u['role']:9} {'disabled' if u['disabled'] else 'enabled'}")
    print(f"{len(users)} user(s)")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Set a user's password (ends their console sessions)."""
    from engine.admin.users import UserError, thd_set_password

    try:
        _run(args, thd_set_password, args.username, _password(args), time.time(), write=True)
    except UserError as exc:
        return _fail(exc)
    print(f"password of {args.username} changed")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Create an API token (printed once; only its hash is stored)."""
    from engine.admin.users import UserError, thd_add_token
    from engine.config.models import parse_duration

    ttl = parse_duration(args.ttl) if args.ttl else None
    try:
        token = _run(args, thd_add_token, args.username, args.name, time.time(), ttl, write=True)
    except UserError as exc:
        return _fail(exc)
    print(token)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    """Disable a user (or enable with --enable); tokens and sessions of a disabled user stop working."""
    from engine.admin.users import UserError, thd_set_disabled

    try:
        _run(args, thd_set_disabled, args.username, not args.enable, time.time(), write=True)
    except UserError as exc:
        return _fail(exc)
    print(f"user {args.username} {'enabled' if args.enable else 'disabled'}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """List the audit trail, newest first."""
    from engine.admin.audit import thd_audit_list
    from engine.admin.http import iso
    from engine.cli_messages import parse_when

    since = parse_when(args.since)
    store = _store(args)
    try:
        rows = store.read_sync(thd_audit_list, user=args.user, action=args.action, since=since, limit=args.limit)
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    for r in rows:
        print(f"{iso(r['at'])}  {r['username'] or '-':20} {r['action']:20} {r['outcome']:8} {r['remote'] or '-':16} "
              f"{r['target'] or ''}")  # fmt: skip
    print(f"{len(rows)} record(s)")
    return 0


def register_users(subparsers: Any) -> None:
    """Add ``users`` and its subcommands."""
    p = subparsers.add_parser("users", help="admin API users, roles and tokens")
    sub = p.add_subparsers(dest="users_command", required=True)

    def cmd(name: str, func: Any, help_text: str, *, password: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--config", "-c", required=True, help="the engine's config (for the database)")
        if name != "list":
            c.add_argument("username")
        if password:
            c.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
        c.set_defaults(func=func)
        return c

    cmd("add", cmd_add, "add a user", password=True).add_argument("--role", choices=ROLES, default=VIEWER)
    cmd("list", cmd_list, "list users").add_argument("--json", action="store_true")
    cmd("passwd", cmd_passwd, "set a user's password", password=True)
    t = cmd("token", cmd_token, "create an API bearer token (printed once)")
    t.add_argument("--name", default="cli", help="a label for the token")
    t.add_argument("--ttl", help="lifetime, e.g. 90d (default: until the user is disabled)")
    cmd("disable", cmd_disable, "disable a user").add_argument("--enable", action="store_true", help="enable again")


def register_audit(subparsers: Any) -> None:
    """Add ``audit``."""
    p = subparsers.add_parser("audit", help="list the admin audit trail")
    p.add_argument("--config", "-c", required=True, help="the engine's config (for the database)")
    p.add_argument("--user", help="only this user's records")
    p.add_argument("--action", help="an action (login.failure) or a prefix (login)")
    p.add_argument("--since", help="ISO time or an age such as 24h")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_audit)

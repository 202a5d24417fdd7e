"""The admin tables on SQLite and PostgreSQL (migration 0006): users, tokens, sessions and audit rows."""

from __future__ import annotations

from engine.admin.audit import AuditRecord, thd_audit_insert, thd_audit_list
from engine.admin.users import (
    thd_add_token,
    thd_add_user,
    thd_end_session,
    thd_new_session,
    thd_session_user,
    thd_token_user,
)
from engine.store.db import current_revision
from tests.admin.conftest import PASSWORD


def test_admin_tables_round_trip(any_store) -> None:
    """After upgrade to 0006 users, tokens, sessions and audit rows work the same on both databases."""
    store = any_store
    assert current_revision(store.engine) >= "0006"
    user = store.transact_sync(thd_add_user, "ann", PASSWORD, "operator", 10.0)
    token = store.transact_sync(thd_add_token, "ann", "t", 10.0)
    assert store.read_sync(thd_token_user, token, 11.0)["id"] == user["id"]
    session, _csrf = store.transact_sync(thd_new_session, user["id"], "127.0.0.1", 10.0, 60.0)
    assert store.read_sync(thd_session_user, session, 20.0)[0]["username"] == "ann"
    assert store.read_sync(thd_session_user, session, 71.0) is None
    assert store.transact_sync(thd_end_session, session) == 1
    for i, action in enumerate(("login.success", "message.view", "login.failure")):
        rec = AuditRecord(action, "ann", "operator", f"message/{i}", "success", "127.0.0.1", {"n": i}, at=100.0 + i)
        store.transact_sync(thd_audit_insert, rec.row())
    rows = store.read_sync(thd_audit_list, action="login", since=100.5)
    assert [(r["action"], r["detail"]) for r in rows] == [("login.failure", {"n": 2})]

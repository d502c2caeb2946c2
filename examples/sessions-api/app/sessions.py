"""Sessions: one streamed app per user and template, placed on an agent's cluster.

This code reads and writes `sessions.tags` (TEXT[]) and `sessions.cluster_id`, while the
columns come from db.MIGRATIONS: when the two disagree, the queries here fail with the
server's `column ... does not exist`, which the handlers log and answer with a 500.
"""

from __future__ import annotations

import secrets
from typing import Any

from .db import Connection
from .logs import log

SESSION_COLUMNS = (
    "id, user_id, template, state, agent_id, cluster_id, "
    "COALESCE(tags, ARRAY[]::TEXT[]) AS tags, created_at"
)
ACTIVE_STATES = ["pending", "running"]
QUOTA = 10


class QuotaExceededError(Exception):
    """The user already has QUOTA active sessions."""


class NoAgentError(Exception):
    """No online agent can take the session."""


def list_user_sessions(
    conn: Connection, user: str, *, active_only: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    where, params = "user_id = %s", [user]
    if active_only:
        where, params = f"{where} AND state = ANY(%s)", [*params, ACTIVE_STATES]
    return conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {where}"
        " ORDER BY created_at DESC, id LIMIT %s",
        [*params, limit],
    ).fetchall()


def get_session(conn: Connection, user: str, session_id: str) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = %s AND user_id = %s",
        (session_id, user),
    ).fetchone()


def create_session(
    conn: Connection, user: str, template: str, tags: list[str] | None
) -> dict[str, Any]:
    if len(list_user_sessions(conn, user, active_only=True, limit=QUOTA)) >= QUOTA:
        raise QuotaExceededError(f"session quota exceeded ({QUOTA} active sessions)")
    agent = conn.execute(
        "SELECT id, cluster_id FROM agents WHERE status = 'online'"
        " ORDER BY last_heartbeat DESC, id LIMIT 1"
    ).fetchone()
    if agent is None:
        raise NoAgentError("no online agent")
    row = conn.execute(
        "INSERT INTO sessions (id, user_id, template, state, agent_id, cluster_id, tags)"
        " VALUES (%s, %s, %s, 'pending', %s, %s, %s)"
        f" RETURNING {SESSION_COLUMNS}",
        (
            f"{user}-{template}-{secrets.token_hex(4)}",
            user,
            template,
            agent["id"],
            agent["cluster_id"],
            tags,
        ),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    log.info("Created session %s in database with state=%s", row["id"], row["state"])
    return row


def delete_session(conn: Connection, user: str, session_id: str) -> bool:
    deleted = conn.execute(
        "DELETE FROM sessions WHERE id = %s AND user_id = %s RETURNING id", (session_id, user)
    ).fetchone()
    if deleted is not None:
        log.info("Deleted session %s from database", session_id)
    return deleted is not None


def to_json(row: dict[str, Any]) -> dict[str, Any]:
    """The API's session shape: `name`/`user` as the Go original named them."""
    return {
        "name": row["id"],
        "user": row["user_id"],
        "template": row["template"],
        "state": row["state"],
        "tags": row["tags"],
        "agent_id": row["agent_id"],
        "cluster_id": row["cluster_id"],
        "created_at": row["created_at"].isoformat(),
    }

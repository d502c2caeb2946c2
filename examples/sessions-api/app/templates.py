"""The template catalog.

`templates.tags` is TEXT[]. Selected as is, psycopg hands it over as list[str]; any detour
through text gives the client PostgreSQL's `{browser,web}` array literal instead of a JSON
array. That was P1-DATABASE-001, and its regression suite guards both read paths here.
"""

from __future__ import annotations

from typing import Any

from .db import Connection
from .logs import log

TEMPLATE_COLUMNS = "id, name, display_name, category, image, tags"


def list_templates(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(f"SELECT {TEMPLATE_COLUMNS} FROM templates ORDER BY name").fetchall()


def get_template(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE name = %s", (name,)
    ).fetchone()
    if row is not None:
        log.info("Fetched template %s from database (ID: %d)", row["name"], row["id"])
    return row

"""What SQL the change introduced, read from the server's statement log.

When the API applies its migrations at start-up, the SQL lives inside application code and
no file linter can find it. With `log_statement = 'all'` during the base and the head
start-ups, the statements the head ran that the base never ran are exactly the change's new
SQL, whatever language the API is written in. Each is then traced back to the changed file
and line that contains it, so findings become annotations on the PR's own code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pglast

# A new log entry starts with the log_line_prefix timestamp; anything else continues the last.
_ENTRY = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_STATEMENT = re.compile(r"LOG:\s+(?:statement|execute [^:]+):\s?(.*)$")
_QUERY_ONLY = (
    pglast.ast.SelectStmt,
    pglast.ast.InsertStmt,
    pglast.ast.UpdateStmt,
    pglast.ast.DeleteStmt,
    pglast.ast.TransactionStmt,
    pglast.ast.VariableSetStmt,
    pglast.ast.VariableShowStmt,
)


@dataclass
class Introduced:
    sql: str
    file: str | None = None
    line: int | None = None


def logged_statements(log: str) -> list[str]:
    """Top-level statements from a PostgreSQL log written with log_statement = 'all'."""
    entries: list[list[str]] = []
    for line in log.splitlines():
        if _ENTRY.match(line):
            match = _STATEMENT.search(line)
            entries.append([match.group(1)] if match else [])
        elif entries and entries[-1]:
            entries[-1].append(line.removeprefix("\t"))
    statements = []
    for entry in entries:
        if entry:
            statements.extend(_split("\n".join(entry)))
    return statements


def schema_changing(statements: list[str]) -> list[str]:
    """Drop queries and session settings: only DDL (and DO blocks) can change a schema."""
    out = []
    for sql in statements:
        try:
            stmt = pglast.parse_sql(sql)[0].stmt
        except pglast.parser.ParseError:
            continue
        if not isinstance(stmt, _QUERY_ONLY):
            out.append(sql)
    return out


def introduced(base_log: str, head_log: str) -> list[str]:
    """Schema-changing statements the head ran and the base never did, in order, once each."""
    seen = {_normal(s) for s in logged_statements(base_log)}
    out: list[str] = []
    for sql in schema_changing(logged_statements(head_log)):
        key = _normal(sql)
        if key not in seen:
            seen.add(key)
            out.append(sql)
    return out


def locate(sql: str, checkout: Path, files: list[str]) -> tuple[str | None, int | None]:
    """The changed file and line where the statement starts, when one holds it.

    Searches for the statement's first distinctive line (short ones like `DO $$` or `BEGIN`
    are everywhere) and steps back by its offset inside the statement.
    """
    lines = sql.splitlines()
    found = next(
        ((i, line.strip()) for i, line in enumerate(lines) if len(line.strip()) >= 12), None
    )
    if found is None:
        return None, None
    offset, first = found
    for name in files:
        path = checkout / name
        try:
            text = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(text, start=1):
            if first in line:
                return name, max(number - offset, 1)
    return None, None


def _split(text: str) -> list[str]:
    try:
        return [text[s].strip() for s in pglast.split(text, with_parser=True, only_slices=True)]
    except pglast.parser.ParseError:
        return [text.strip()]


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").lower()

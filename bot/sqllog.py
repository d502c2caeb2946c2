"""What SQL the change introduced, and how long each statement took, from the server's log.

When the API applies its migrations at start-up, the SQL lives inside application code and
no file linter can find it. With `log_min_duration_statement = 0` during the base and the
head start-ups, the server logs every completed statement with its duration; the statements
the head ran that the base never ran are exactly the change's new SQL, whatever language the
API is written in. Each is traced back to the changed file and line that holds it, so
findings become annotations on the PR's own code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pglast

# A new log entry starts with the log_line_prefix timestamp; anything else continues the last.
_ENTRY = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_STATEMENT = re.compile(
    r"LOG:\s+(?:duration: (?P<ms>[\d.]+) ms\s+)?(?:statement|execute [^:]+):\s?(?P<sql>.*)$"
)
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
class Logged:
    sql: str
    duration_ms: float | None  # None when the statement came in a batch with others


def logged_statements(log: str) -> list[Logged]:
    """Top-level statements, in order, from a log written with log_min_duration_statement=0."""
    entries: list[tuple[float | None, list[str]]] = []
    for line in log.splitlines():
        if _ENTRY.match(line):
            match = _STATEMENT.search(line)
            if match:
                ms = float(match["ms"]) if match["ms"] else None
                entries.append((ms, [match["sql"]]))
            else:
                entries.append((None, []))
        elif entries and entries[-1][1]:
            entries[-1][1].append(line.removeprefix("\t"))
    statements = []
    for ms, lines in entries:
        if lines:
            parts = _split("\n".join(lines))
            statements.extend(Logged(p, ms if len(parts) == 1 else None) for p in parts)
    return statements


def introduced(base_log: str, head_log: str) -> list[Logged]:
    """Schema-changing statements the head ran and the base never did, in order, once each."""
    seen = {_normal(s.sql) for s in logged_statements(base_log)}
    out: list[Logged] = []
    for statement in logged_statements(head_log):
        key = _normal(statement.sql)
        if key not in seen and _changes_schema(statement.sql):
            seen.add(key)
            out.append(statement)
    return out


def locate(sql: str, checkout: Path, added: dict[str, set[int]]) -> tuple[str | None, int | None]:
    """The changed file and line where the statement starts, when one holds it.

    Searches the lines the change added first (the same SQL may exist elsewhere in the
    file, as older migrations often repeat a guard), then the rest of the changed files. The
    search key is the statement's first distinctive line (short ones like `DO $$` or `BEGIN`
    are everywhere), and the result steps back by that line's offset in the statement.
    """
    lines = sql.splitlines()
    found = next(
        ((i, line.strip()) for i, line in enumerate(lines) if len(line.strip()) >= 12), None
    )
    if found is None:
        return None, None
    offset, first = found
    hits: list[tuple[bool, str, int]] = []
    for name, new_lines in added.items():
        try:
            text = (checkout / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(text, start=1):
            if first in line:
                hits.append((number in new_lines, name, max(number - offset, 1)))
    if not hits:
        return None, None
    _, name, number = max(hits, key=lambda hit: hit[0])
    return name, number


def _changes_schema(sql: str) -> bool:
    """Queries and session settings cannot change a schema; DDL and DO blocks can."""
    try:
        stmt = pglast.parse_sql(sql)[0].stmt
    except pglast.parser.ParseError:
        return False
    return not isinstance(stmt, _QUERY_ONLY)


def _split(text: str) -> list[str]:
    try:
        return [text[s].strip() for s in pglast.split(text, with_parser=True, only_slices=True)]
    except pglast.parser.ParseError:
        return [text.strip()]


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").lower()

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


# The sandbox's log_line_prefix, '%m [%p] %q%u@%d ': which database a session's entry is about.
_SESSION = re.compile(r"^\S+ \S+ \S+ \[\d+\] [^@\s]*@(?P<database>\S*) ")


def of_database(log: str, database: str) -> str:
    """The entries of `log` that sessions on `database` wrote, continuation lines included:
    work on another database at the same time (the models compared beside the replay) stays
    out of what is read about this one."""
    kept: list[str] = []
    keep = False
    for line in log.splitlines(keepends=True):
        if _ENTRY.match(line):
            session = _SESSION.match(line)
            keep = session is not None and session["database"] == database
        if keep:
            kept.append(line)
    return "".join(kept)


@dataclass
class Logged:
    sql: str
    duration_ms: float | None  # None when the statement came in a batch with others


def logged_statements(log: str) -> list[Logged]:
    """Top-level statements, in order, from a log written with log_min_duration_statement=0."""
    return [logged for logged, _node in _logged(log)]


def introduced(base_log: str, head_log: str) -> list[Logged]:
    """Schema-changing statements the head ran and the base never did, in order, once each."""
    seen = {_normal(s.sql) for s in logged_statements(base_log)}
    out: list[Logged] = []
    for statement, node in _logged(head_log):
        key = _normal(statement.sql)
        # Queries and session settings cannot change a schema; DDL and DO blocks can.
        if key not in seen and node is not None and not isinstance(node, _QUERY_ONLY):
            seen.add(key)
            out.append(statement)
    return out


def _logged(log: str) -> list[tuple[Logged, pglast.ast.Node | None]]:
    """Each logged statement with its parse tree (None when it does not parse)."""
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
            parts = _parsed("\n".join(lines))
            statements.extend(
                (Logged(sql, ms if len(parts) == 1 else None), node) for sql, node in parts
            )
    return statements


def dml(log: str, base_log: str = "") -> list[tuple[str, str, str]]:
    """UPDATE and DELETE statements of the log that `base_log` does not hold, once each:
    (sql, table as written, verb). The populated replay checks each touched rows where rows
    were there to touch; one the base ran too (start-up SQL that runs on every start) is
    not the change's."""
    out: list[tuple[str, str, str]] = []
    seen = {_normal(s.sql) for s in logged_statements(base_log)}
    for statement, node in _logged(log):
        if isinstance(node, pglast.ast.UpdateStmt | pglast.ast.DeleteStmt):
            relation = node.relation
            table = ".".join(p for p in (relation.schemaname, relation.relname) if p)
            verb = "UPDATE" if isinstance(node, pglast.ast.UpdateStmt) else "DELETE"
            if _normal(statement.sql) not in seen:
                seen.add(_normal(statement.sql))
                out.append((statement.sql, table, verb))
    return out


@dataclass
class Held:
    """How long the change's statements held one table, and under which lock."""

    ms: float = 0.0  # ALTER TABLE and plain CREATE INDEX on it, summed
    lock: str = ""  # the strongest lock of a statement whose time grows with the rows
    grows: bool = False  # one of them reads or copies the whole table (a scan, a build)


# Locks as PostgreSQL orders them: the last blocks the most.
_LOCKS = ("SHARE", "SHARE ROW EXCLUSIVE", "ACCESS EXCLUSIVE")
_AT = pglast.enums.AlterTableType
_CONSTR = pglast.enums.ConstrType


def held(log: str, base_log: str = "") -> dict[str, Held]:
    """Per table (as written), from a log with durations: the milliseconds its ALTER TABLE
    and plain CREATE INDEX statements took, and whether one of them grows with its rows.
    Statements `base_log` holds too (start-up SQL run at every start) are not the change's."""
    known = {_normal(s.sql) for s in logged_statements(base_log)}
    out: dict[str, Held] = {}
    for statement, node in _logged(log):
        if statement.duration_ms is None or _normal(statement.sql) in known:
            continue
        if isinstance(node, pglast.ast.IndexStmt) and not node.concurrent:
            relation, lock = node.relation, "SHARE"
        elif isinstance(node, pglast.ast.AlterTableStmt):
            relation, lock = node.relation, _scan_lock(node)
        else:
            continue
        table = ".".join(p for p in (relation.schemaname, relation.relname) if p)
        entry = out.setdefault(table, Held())
        entry.ms += statement.duration_ms
        if lock:
            entry.grows = True
            entry.lock = max(entry.lock, lock, key=lambda m: _LOCKS.index(m) if m else -1)
    return out


def _scan_lock(node: pglast.ast.AlterTableStmt) -> str:
    """The lock an ALTER TABLE holds while it reads every row ('' when none of its commands
    does: adding a nullable column, dropping one, renaming are catalog changes). A table
    rewrite is seen by the event triggers, not guessed here."""
    locks = []
    for cmd in node.cmds or ():
        if cmd.subtype in (_AT.AT_SetNotNull, _AT.AT_AlterColumnType):
            locks.append("ACCESS EXCLUSIVE")
        elif cmd.subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, pglast.ast.Constraint):
            constraint = cmd.def_
            if constraint.skip_validation or constraint.indexname:
                continue  # NOT VALID, or an index built before: nothing read now
            if constraint.contype == _CONSTR.CONSTR_FOREIGN:
                locks.append("SHARE ROW EXCLUSIVE")
            elif constraint.contype in (
                _CONSTR.CONSTR_CHECK,
                _CONSTR.CONSTR_PRIMARY,
                _CONSTR.CONSTR_UNIQUE,
                _CONSTR.CONSTR_EXCLUSION,
            ):
                locks.append("ACCESS EXCLUSIVE")
    return max(locks, key=_LOCKS.index, default="")


def locate(
    sql: str, files: dict[str, list[str]], added: dict[str, set[int]]
) -> tuple[str | None, int | None]:
    """The changed file and line where the statement starts, when one holds it.

    `files` are the changed files' lines, as `read_changed` gives them (read once per run, not
    once per statement). Searches the lines the change added first (the same SQL may exist
    elsewhere in the file, as older migrations often repeat a guard), then the rest of the
    changed files. The search key is the statement's first distinctive line (short ones like
    `DO $$` or `BEGIN` are everywhere), and the result steps back by that line's offset in the
    statement.
    """
    lines = sql.splitlines()
    found = next(
        ((i, line.strip()) for i, line in enumerate(lines) if len(line.strip()) >= 12), None
    )
    if found is None:
        return None, None
    offset, first = found
    hits: list[tuple[bool, str, int]] = []
    for name, text in files.items():
        new_lines = added.get(name, set())
        for number, line in enumerate(text, start=1):
            if first in line:
                hits.append((number in new_lines, name, max(number - offset, 1)))
    if not hits:
        return None, None
    _, name, number = max(hits, key=lambda hit: hit[0])
    return name, number


def read_changed(checkout: Path, added: dict[str, set[int]]) -> dict[str, list[str]]:
    """The lines of each changed file in `checkout` that can be read as text."""
    files = {}
    for name in added:
        try:
            files[name] = (checkout / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
    return files


def _parsed(text: str) -> list[tuple[str, pglast.ast.Node | None]]:
    """The statements of `text`, each with its parse tree; all of it, unparsed, on an error."""
    try:
        raws = pglast.parse_sql(text)
    except pglast.parser.ParseError:
        return [(text.strip(), None)]
    parts = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else None
        parts.append((text[start:end].strip(), raw.stmt))
    return parts


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").lower()

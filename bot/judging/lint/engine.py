"""Runs the migration rules over one SQL file.

Rules look at one statement at a time. Everything that needs the whole file lives here: where a
statement sits in the original text (also inside `DO $$ ... $$` blocks and function bodies),
which transaction it runs in, whether `lock_timeout` is set, which tables the migration itself
created, and which findings a `-- gatekeeper:ignore` comment moves aside.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pglast import ast, enums, parse_plpgsql, parse_sql
from pglast.parser import ParseError, scan
from pydantic import BaseModel, Field

from bot.judging.lint import sqlast
from bot.judging.lint.model import (
    BIG_TABLE_ROWS,
    Context,
    Hit,
    LintOptions,
    Rule,
    Statement,
    find_table,
    table_key,
)
from bot.judging.lint.rules import ENGINE_FINDINGS, INVALID_SUPPRESSION, RULES, SYNTAX_ERROR
from bot.judging.verdict import Finding, Risk

DEFAULT_OPTIONS = LintOptions()

_IGNORE = re.compile(
    r"--\s*gatekeeper:ignore(?:\s+(?P<rules>[\w-]+(?:\s*,\s*[\w-]+)*))?(?P<reason>.*)", re.S
)
_OPENING_QUOTE = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$|[eE]?'")
_STATEMENT_SUMMARY = 240
# PL/pgSQL statements that carry SQL, and the key of their expression.
_PLPGSQL_SQL = {
    "PLpgSQL_stmt_execsql": "sqlstmt",
    "PLpgSQL_stmt_perform": "expr",
    "PLpgSQL_stmt_dynexecute": "query",
}
# What runs only conditionally: IF/CASE branches and blocks with an EXCEPTION handler.
_PLPGSQL_GUARDS = {"PLpgSQL_stmt_if", "PLpgSQL_stmt_case"}


class LintResult(BaseModel):
    findings: list[Finding] = Field(default_factory=list)
    suppressed: list[Finding] = Field(
        default_factory=list, description="Findings moved aside, each with its suppressed_reason."
    )
    errors: list[str] = Field(
        default_factory=list, description="`file:line: message` for SQL that does not parse."
    )


def lint_sql(
    sql: str,
    *,
    file: str | None = None,
    line_offset: int = 0,
    options: LintOptions = DEFAULT_OPTIONS,
) -> LintResult:
    """Lint one migration file; syntax errors are findings, not exceptions.

    `line_offset` is added to every line, for SQL embedded in a larger file.
    """
    return _Linter(sql, file, line_offset, options).run()


@dataclass(eq=False)
class _Transaction:
    seen: list[Statement] = field(default_factory=list)
    # `SET LOCAL lock_timeout` lasts until the end of the transaction only.
    lock_timeout: bool = False


@dataclass(frozen=True)
class _Comment:
    offset: int
    text: str
    # After code on the same line: it is about that line's statement, not the next one.
    trailing: bool


class _Linter:
    def __init__(self, sql: str, file: str | None, line_offset: int, options: LintOptions) -> None:
        self.sql = sql
        self.file = file
        self.line_offset = line_offset
        self.options = options
        self.result = LintResult()
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", sql))]
        self._comments: list[_Comment] = []
        self._suppressions: dict[int, dict[str, str]] = {}
        self._reported: set[tuple[str, int]] = set()
        self._known = (
            None
            if options.known_tables is None
            else frozenset(map(table_key, options.known_tables))
        )
        self._rows = {table_key(t): n for t, n in options.table_rows.items()}
        # Migration state while walking the file top to bottom.
        self._tx: _Transaction | None = _Transaction() if options.single_transaction else None
        self._routine_tx: dict[int, _Transaction] = {}
        self._session_lock_timeout = False
        self._history: list[Statement] = []
        self._created: set[str] = set()
        self._renamed: set[str] = set()

    def run(self) -> LintResult:
        self._comments = self._scan_comments(self.sql, 0)
        statements: list[Statement] = []
        for raw in self._top_level():
            stmt = self._statement(raw, self.sql, 0)
            statements.append(stmt)
            statements.extend(self._routine_statements(stmt))
        self._bind_suppressions(statements)
        for stmt in statements:
            self._lint(stmt)
        for findings in (self.result.findings, self.result.suppressed):
            findings.sort(key=lambda f: (f.line or 0, f.column or 0))
        return self.result

    # Positions -------------------------------------------------------------------------------

    def _line(self, offset: int) -> int:
        return bisect_right(self._line_starts, offset) + self.line_offset

    def _column(self, offset: int) -> int:
        return offset - self._line_starts[bisect_right(self._line_starts, offset) - 1] + 1

    def _source_line(self, offset: int) -> str:
        index = bisect_right(self._line_starts, offset) - 1
        return self.sql[self._line_starts[index] :].split("\n", 1)[0].strip()

    def _statement(self, raw: ast.RawStmt, source: str, base: int, **where: Any) -> Statement:
        """A statement of `source`, which starts at offset `base` of the file."""
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(source.rstrip())
        while start < end and source[start].isspace():
            start += 1
        offset = base + start
        return Statement(
            node=raw.stmt,
            text=source[start:end],
            offset=offset,
            end=base + end,
            line=self._line(offset),
            column=self._column(offset),
            locks=tuple(sqlast.locks(raw.stmt)),
            **where,
        )

    # Parsing ---------------------------------------------------------------------------------

    def _top_level(self) -> list[ast.RawStmt]:
        try:
            return list(parse_sql(self.sql))
        except ParseError as exc:
            offset = _error_offset(exc, len(self.sql.rstrip()))
            self._syntax_error(exc.args[0], offset)
            return self._statements_before(offset)

    def _statements_before(self, offset: int) -> list[ast.RawStmt]:
        """What precedes the broken statement still deserves findings: a fix keeps it."""
        try:
            ends = [t.end for t in scan(self.sql) if t.name == "ASCII_59" and t.end < offset]
            return list(parse_sql(self.sql[: ends[-1] + 1])) if ends else []
        except ParseError:
            return []

    def _routine_statements(self, stmt: Statement) -> Iterator[Statement]:
        """Statements inside a DO block or a PL/pgSQL / SQL function body, at their file lines."""
        found = _routine_body(stmt.node)
        if found is None:
            return
        language, body, location = found
        quote = _OPENING_QUOTE.match(self.sql, location)
        start = location + (len(quote.group()) if quote else 0)
        routine: Literal["DO block", "function"] = (
            "DO block" if isinstance(stmt.node, ast.DoStmt) else "function"
        )
        self._comments.extend(self._scan_comments(body, start))
        if language == "sql":
            for raw in self._parse_or_report(body, start):
                yield self._statement(raw, body, start, routine=routine, parent=stmt)
            return
        try:
            tree = parse_plpgsql(stmt.text)
        except ParseError as exc:
            self._syntax_error(f"{exc.args[0]} (in this {routine})", stmt.offset)
            return
        cursor = 0
        for kind, lineno, query, guarded in _plpgsql_sql(tree):
            line_start = _nth_line_start(body, lineno)
            where = {"guarded": guarded, "routine": routine, "parent": stmt}
            # PERFORM's expression arrives as `SELECT <expression>`: place it where it was.
            expression = query if kind != "PLpgSQL_stmt_perform" else query[len("SELECT") :]
            needle = expression.strip()
            position = _find(body, needle, max(line_start, cursor), line_start)
            cursor = position + len(needle)
            if kind == "PLpgSQL_stmt_dynexecute":
                yield from self._dynamic_sql(query, start + position, where)
                continue
            base = start + position - (len(query) - len(expression.lstrip()))
            for raw in self._parse_or_report(query, base):
                yield self._statement(raw, query, base, **where)

    def _dynamic_sql(
        self, expression: str, offset: int, where: dict[str, Any]
    ) -> Iterator[Statement]:
        """EXECUTE of a string literal, or of format() over literals: the SQL it will run."""
        prefix = "SELECT "
        parsed = _parse_quietly(prefix + expression)
        select = parsed[0].stmt if parsed else None
        if not isinstance(select, ast.SelectStmt) or not select.targetList:
            return
        value = select.targetList[0].val
        literal, args = value, ()
        if isinstance(value, ast.FuncCall) and sqlast.dotted(value.funcname).endswith("format"):
            literal, args = (value.args or (None,))[0], tuple(value.args[1:])
        if not (isinstance(literal, ast.A_Const) and isinstance(literal.val, ast.String)):
            return
        sql = literal.val.sval if not args else _format(literal.val.sval, args)
        if sql is None:
            return
        # A_Const carries no location: the SQL string is the expression's first string token.
        strings = [t.start for t in scan(expression) if t.name == "SCONST"]
        quote_at = offset + (strings[0] if strings else 0)
        quote = _OPENING_QUOTE.match(self.sql, quote_at)
        base = quote_at + (len(quote.group()) if quote else 0)
        # format() shifts positions, and a substitution can break SQL that is fine at run time.
        raws = self._parse_or_report(sql, base) if not args else _parse_quietly(sql)
        for raw in raws:
            yield self._statement(raw, sql, base, **where)

    def _parse_or_report(self, sql: str, base: int) -> list[ast.RawStmt]:
        try:
            return list(parse_sql(sql))
        except ParseError as exc:
            self._syntax_error(exc.args[0], base + _error_offset(exc, len(sql.rstrip())))
            return []

    def _syntax_error(self, message: str, offset: int) -> None:
        self.result.errors.append(f"{self.file or '<sql>'}:{self._line(offset)}: {message}")
        self._engine_finding(SYNTAX_ERROR, message, offset, self._source_line(offset))

    # Suppressions ------------------------------------------------------------------------------

    def _scan_comments(self, source: str, base: int) -> list[_Comment]:
        try:
            tokens = scan(source)
        except ParseError:
            return []
        comments = []
        for token in tokens:
            if token.name == "SQL_COMMENT":
                offset = base + token.start
                line_start = self._line_starts[bisect_right(self._line_starts, offset) - 1]
                trailing = bool(self.sql[line_start:offset].strip())
                comments.append(_Comment(offset, source[token.start : token.end + 1], trailing))
        return comments

    def _bind_suppressions(self, statements: Sequence[Statement]) -> None:
        """Attach each `-- gatekeeper:ignore` to the statement it is about.

        A trailing comment is about the statement that ends before it on its line; a comment on
        its own line is about the next statement.
        """
        for comment in self._comments:
            match = _IGNORE.match(comment.text)
            if match is None:
                continue
            rules = [r.strip() for r in (match["rules"] or "").split(",") if r.strip()]
            reason = match["reason"].strip()
            problems = [f"unknown rule '{r}' in gatekeeper:ignore" for r in rules if r not in RULES]
            if not rules:
                problems.append("gatekeeper:ignore names no rule")
            if not reason:
                problems.append("suppression needs a reason")
            for problem in problems:
                self._engine_finding(INVALID_SUPPRESSION, problem, comment.offset, comment.text)
            target = _suppression_target(comment, statements, self._line)
            if reason and target is not None:
                entries = self._suppressions.setdefault(id(target), {})
                entries.update({r: reason for r in rules if r in RULES})

    def _suppression_reason(self, stmt: Statement, rule: str) -> str | None:
        reason = self.options.disabled.get(rule)
        node: Statement | None = stmt
        while reason is None and node is not None:
            reason = self._suppressions.get(id(node), {}).get(rule)
            node = node.parent
        return reason

    # Linting -----------------------------------------------------------------------------------

    def _lint(self, stmt: Statement) -> None:
        runs_now = stmt.routine != "function"
        # A DO block runs inside the enclosing transaction, or as one of its own; a function body
        # runs later, in whatever transaction calls it.
        if stmt.parent is None or (stmt.routine == "DO block" and self._tx is not None):
            tx = self._tx
        else:
            tx = self._routine_tx.setdefault(id(stmt.parent), _Transaction())
        history = self._history if runs_now else [*self._history, *tx.seen]
        session_timeout = self._session_lock_timeout if runs_now else False
        ctx = Context(
            options=self.options,
            in_transaction=tx is not None,
            seen=tx.seen if tx is not None else (),
            history=history,
            lock_timeout=session_timeout or (tx is not None and tx.lock_timeout),
            known=self._known,
            created=frozenset(self._created),
            renamed=frozenset(self._renamed),
        )
        for rule in RULES.values():
            for hit in rule.check(stmt, ctx):
                if hit.table is not None and ctx.is_new(hit.table):
                    continue
                if rule.once_per_transaction:
                    key = (rule.id, id(tx))
                    if key in self._reported:
                        continue
                    self._reported.add(key)
                self._file(self._finding(rule, hit, stmt), stmt)
        self._track(stmt, ctx, tx, runs_now)

    def _track(
        self, stmt: Statement, ctx: Context, tx: _Transaction | None, runs_now: bool
    ) -> None:
        """Update what later statements see: transaction, lock_timeout, tables created."""
        node = stmt.node
        kinds = enums.TransactionStmtKind
        if isinstance(node, ast.TransactionStmt) and not self.options.single_transaction:
            if node.kind in (kinds.TRANS_STMT_BEGIN, kinds.TRANS_STMT_START):
                self._tx = _Transaction()
            elif node.kind in (kinds.TRANS_STMT_COMMIT, kinds.TRANS_STMT_ROLLBACK):
                self._tx = None
            return
        timeout = _lock_timeout_setting(node)
        if timeout is not None:
            if node.is_local or not runs_now:
                if tx is not None:
                    tx.lock_timeout = timeout
            else:
                self._session_lock_timeout = timeout
        if tx is not None:
            tx.seen.append(stmt)
        if not runs_now:
            return
        self._history.append(stmt)
        match node:
            case ast.CreateStmt(relation=rv) | ast.CreateTableAsStmt(into=ast.IntoClause(rel=rv)):
                # IF NOT EXISTS creates nothing when the table is already there (a start-up
                # migration's second run, or an older release's table): new only if the
                # tables known before the migration say it was not.
                name = sqlast.relation(rv)
                if not node.if_not_exists or (
                    self._known is not None and find_table(name, self._known) is None
                ):
                    self._created.add(table_key(name))
            case ast.RenameStmt(renameType=enums.ObjectType.OBJECT_TABLE, relation=rv):
                new = table_key(
                    f"{rv.schemaname}.{node.newname}" if rv.schemaname else node.newname
                )
                (self._created if ctx.is_new(sqlast.relation(rv)) else self._renamed).add(new)

    def _finding(self, rule: Rule, hit: Hit, stmt: Statement) -> Finding:
        level = hit.level or rule.default_level
        message = hit.message
        row_key = find_table(hit.table, self._rows) if hit.table else None
        rows = self._rows[row_key] if row_key is not None else None
        if rows is not None:
            message += f" ({hit.table}: ~{rows:,} rows)"
            if rows > BIG_TABLE_ROWS and (rule.rewrites or rule.scans):
                level = list(Risk)[min(level.rank + 1, len(Risk) - 1)]
            elif rows < BIG_TABLE_ROWS and rule.lock is not None and level is Risk.medium:
                # A declared size below a million rows: the lock is held for well under a
                # second. Still reported, as a low-level note rather than a risk.
                level = Risk.low
        return Finding(
            rule=rule.id,
            level=self.options.severity.get(rule.id, level),
            message=message,
            file=self.file,
            line=stmt.line,
            column=stmt.column,
            statement=_summary(stmt.text),
            safe_alternative=hit.safe_alternative or rule.safe_alternative,
            lock=rule.lock.value if rule.lock else None,
            rewrites=rule.rewrites,
            table=hit.table,
        )

    def _engine_finding(self, rule: str, message: str, offset: int, statement: str) -> None:
        finding = Finding(
            rule=rule,
            level=self.options.severity.get(rule, ENGINE_FINDINGS[rule].default_level),
            message=message,
            file=self.file,
            line=self._line(offset),
            column=self._column(offset),
            statement=_summary(statement),
        )
        reason = self.options.disabled.get(rule)
        if reason is None:
            self.result.findings.append(finding)
        else:
            self.result.suppressed.append(finding.model_copy(update={"suppressed_reason": reason}))

    def _file(self, finding: Finding, stmt: Statement) -> None:
        reason = self._suppression_reason(stmt, finding.rule)
        if reason is None:
            self.result.findings.append(finding)
        else:
            self.result.suppressed.append(finding.model_copy(update={"suppressed_reason": reason}))


def _routine_body(node: ast.Node) -> tuple[str, str, int] | None:
    """(language, body, offset of the body's opening quote) of a DO block or function."""
    if isinstance(node, ast.DoStmt):
        options, language = node.args, "plpgsql"
    elif isinstance(node, ast.CreateFunctionStmt):
        options, language = node.options, ""
    else:
        return None
    body = None
    for option in options or ():
        if option.defname == "language":
            language = option.arg.sval.lower()
        elif option.defname == "as":
            # A C function's AS is (object file, link symbol): no SQL in it.
            parts = option.arg if isinstance(option.arg, tuple) else (option.arg,)
            if len(parts) == 1 and option.arg_location is not None:
                body = (parts[0].sval, option.arg_location)
    if body is None or language not in ("plpgsql", "sql"):
        return None
    return language, *body


def _plpgsql_sql(tree: Any, guarded: bool = False) -> Iterator[tuple[str, int, str, bool]]:
    """(statement kind, line in the body, SQL text, guarded) of each SQL-carrying statement."""
    if isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_sql(item, guarded)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if key in _PLPGSQL_SQL:
                query = value[_PLPGSQL_SQL[key]]["PLpgSQL_expr"]["query"]
                yield key, value.get("lineno", 1), query, guarded
            else:
                inner = (
                    guarded
                    or key in _PLPGSQL_GUARDS
                    or (key == "PLpgSQL_stmt_block" and "exceptions" in value)
                )
                yield from _plpgsql_sql(value, inner)


def _nth_line_start(text: str, line: int) -> int:
    offset = 0
    for _ in range(line - 1):
        offset = text.find("\n", offset) + 1
        if offset == 0:
            return 0
    return offset


def _find(text: str, needle: str, start: int, line_start: int) -> int:
    """Where PL/pgSQL's copy of a statement sits in the body, searching from `start` (after the
    previous statement, so twins on one line are told apart), then from its line's start."""
    for origin in (start, line_start):
        found = text.find(needle, origin)
        if found >= 0:
            return found
    return line_start + len(text[line_start:]) - len(text[line_start:].lstrip())


def _error_offset(exc: ParseError, end: int) -> int:
    """pglast reports a character offset, or None for 'syntax error at end of input'."""
    location = exc.args[1] if len(exc.args) > 1 else None
    return end if location is None else location


def _parse_quietly(sql: str) -> list[ast.RawStmt]:
    try:
        return list(parse_sql(sql))
    except ParseError:
        return []


def _format(template: str, args: Sequence[Any]) -> str | None:
    """PostgreSQL's format() for %s/%I/%L over constants; None when an argument is not one."""
    values = []
    for arg in args:
        if not isinstance(arg, ast.A_Const) or arg.isnull:
            return None
        values.append(_constant_text(arg.val))
    remaining = iter(values)
    out = []
    for piece in re.split(r"(%[%sIL])", template):
        if piece == "%%":
            out.append("%")
        elif piece in ("%s", "%I", "%L"):
            value = next(remaining, None)
            if value is None:
                return None
            if piece == "%I" and not re.fullmatch(r"[a-z_][a-z0-9_$]*", value):
                value = '"' + value.replace('"', '""') + '"'
            elif piece == "%L":
                value = "'" + value.replace("'", "''") + "'"
            out.append(value)
        else:
            out.append(piece)
    return "".join(out)


def _lock_timeout_setting(node: ast.Node) -> bool | None:
    """True/False when the statement turns lock_timeout on/off; None when it does not touch it."""
    if not isinstance(node, ast.VariableSetStmt):
        return None
    kinds = enums.VariableSetKind
    if node.kind == kinds.VAR_RESET_ALL:
        return False
    if node.name != "lock_timeout":
        return None
    if node.kind != kinds.VAR_SET_VALUE or not node.args:
        return False
    text = _constant_text(node.args[0].val) if isinstance(node.args[0], ast.A_Const) else "on"
    return not re.fullmatch(r"\s*0+(\.0*)?\s*(us|ms|s|min|h|d)?\s*", text)


def _constant_text(value: ast.Node) -> str:
    match value:
        case ast.String(sval=text) | ast.Float(fval=text) | ast.BitString(bsval=text):
            return text
        case ast.Integer(ival=number):
            return str(number)
        case ast.Boolean(boolval=flag):
            return "true" if flag else "false"
    return ""


def _suppression_target(
    comment: _Comment, statements: Sequence[Statement], line: Callable[[int], int]
) -> Statement | None:
    """The statement ending before a trailing comment on its line; else the next statement, or
    the statement the comment sits in (the next one inside it first, for DO blocks)."""
    if comment.trailing:
        ended = [
            s for s in statements if s.end <= comment.offset and line(s.end) == line(comment.offset)
        ]
        if ended:
            return max(ended, key=lambda s: s.end)
    following = [s for s in statements if s.offset > comment.offset]
    containers = [s for s in statements if s.offset < comment.offset < s.end]
    if containers:
        innermost = max(containers, key=lambda s: s.offset)
        following = [s for s in following if s.offset < innermost.end] or [innermost]
    return min(following, key=lambda s: s.offset) if following else None


def _summary(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _STATEMENT_SUMMARY else flat[: _STATEMENT_SUMMARY - 1] + "…"

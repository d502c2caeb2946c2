"""Shapes shared by the linter's engine and its rules.

A rule is data (the lock it takes, whether it rewrites or scans, why that hurts, what to do
instead) plus one small check function. Everything positional or stateful — where a statement
sits, which transaction it runs in, what the migration created before it — is computed by the
engine and handed to checks as a `Statement` and a `Context`, so each rule stays a screenful.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pglast import ast
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.judging.verdict import Risk

# Above this many rows a rewrite or a full scan is minutes, not seconds: findings go up a level.
BIG_TABLE_ROWS = 1_000_000


class LockMode(StrEnum):
    """PostgreSQL's table-level lock modes, weakest first (the docs' conflict table order)."""

    access_share = "ACCESS SHARE"
    row_share = "ROW SHARE"
    row_exclusive = "ROW EXCLUSIVE"
    share_update_exclusive = "SHARE UPDATE EXCLUSIVE"
    share = "SHARE"
    share_row_exclusive = "SHARE ROW EXCLUSIVE"
    exclusive = "EXCLUSIVE"
    access_exclusive = "ACCESS EXCLUSIVE"

    @property
    def rank(self) -> int:
        return _LOCK_RANKS[self]

    @property
    def blocks_writes(self) -> bool:
        """SHARE and stronger conflict with ROW EXCLUSIVE, the lock every INSERT/UPDATE takes."""
        return self.rank >= LockMode.share.rank


_LOCK_RANKS = {mode: rank for rank, mode in enumerate(LockMode)}


@dataclass(frozen=True)
class Lock:
    relation: str
    mode: LockMode
    # The relation is an index named in the statement: its table is not known from the text.
    index: bool = False


class LintOptions(BaseModel):
    """What the linter cannot see in the SQL text: the server, the data, the team's policy."""

    model_config = ConfigDict(frozen=True)

    pg_version: int = Field(18, ge=9, description="Major version of the production server.")
    require_idempotent: bool = Field(
        False,
        description="The file is re-run (e.g. at every API start): flag statements that fail "
        "the second time.",
    )
    known_tables: set[str] | None = Field(
        None,
        description="Tables that exist before the migration (e.g. at the base branch). "
        "None: assume every table the migration touches already exists.",
    )
    table_rows: dict[str, int] = Field(
        default_factory=dict, description="Declared production row counts, by table name."
    )
    column_types: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Column types before the migration (PostgreSQL's format_type text), by "
        "table and column: what a rule comparing old and new types needs when the migration "
        "does not declare the old one itself (a versioned migration altering an old table).",
    )
    severity: dict[str, Risk] = Field(default_factory=dict, description="Per-rule level override.")
    disabled: dict[str, str] = Field(
        default_factory=dict, description="Rule id -> reason; such findings are kept as suppressed."
    )
    single_transaction: bool = Field(
        False,
        description="The runner wraps the whole file in one transaction (psql "
        "--single-transaction, most migration frameworks): statements run inside a transaction "
        "block without BEGIN.",
    )

    @field_validator("severity", "disabled")
    @classmethod
    def _rule_ids_exist(cls, value: dict[str, object]) -> dict[str, object]:
        # Imported here: the rule modules import this one. A typo in a policy would otherwise
        # silently leave a rule at its default level or enabled.
        from bot.judging.lint.rules import ENGINE_FINDINGS, RULES

        unknown = sorted(set(value) - set(RULES) - set(ENGINE_FINDINGS))
        if unknown:
            raise ValueError(f"unknown rule id(s): {', '.join(unknown)}")
        return value


@dataclass(frozen=True, eq=False)
class Statement:
    """One SQL statement as the rules see it, with where it sits in the original file."""

    node: ast.Node
    text: str
    offset: int
    end: int
    line: int
    column: int
    # The statement runs only under an IF/CASE branch or an EXCEPTION handler of a DO block or
    # function: the usual way to make a startup migration re-runnable.
    guarded: bool = False
    # The DO block or function body the statement was found in, if any.
    routine: Literal["DO block", "function"] | None = None
    parent: Statement | None = None
    # Table locks the statement takes (computed once: transaction-wide rules re-read them).
    locks: tuple[Lock, ...] = ()


@dataclass(frozen=True)
class Context:
    """What a rule may know beyond its statement."""

    options: LintOptions
    # Inside BEGIN ... COMMIT, a DO block, a function body, or a file run as one transaction.
    in_transaction: bool
    # Earlier statements of the same transaction (empty outside one).
    seen: Sequence[Statement]
    # Every earlier statement of the migration that runs now (function bodies run later).
    history: Sequence[Statement]
    # `SET lock_timeout` is in effect for this statement.
    lock_timeout: bool
    # Tables that exist before the migration (None: all of them), the tables the migration
    # created before this statement, and the new names it gave pre-existing tables.
    known: frozenset[str] | None = None
    created: frozenset[str] = frozenset()
    renamed: frozenset[str] = frozenset()

    def is_new(self, table: str) -> bool:
        """Nobody else can be using a table this migration created: its locks cost nothing."""
        if find_table(table, self.created) is not None:
            return True
        return (
            self.known is not None
            and find_table(table, self.known) is None
            and find_table(table, self.renamed) is None
        )


def table_key(name: str) -> str:
    """`public.t` and `t` are the same table for every lookup the linter does, and the
    catalog's quoted `public."user"` is the parser's `user`: the key holds the identifiers
    themselves, unquoted, as the parser gives them."""
    return ".".join(_identifiers(name)).removeprefix("public.")


def _identifiers(name: str) -> list[str]:
    """`public."Odd.Name"` as ['public', 'Odd.Name']: dots inside quotes do not split, and a
    doubled quote is one quote."""
    parts, current, quoted, index = [], "", False, 0
    while index < len(name):
        char = name[index]
        if char == '"':
            if quoted and name[index + 1 : index + 2] == '"':
                current += '"'
                index += 1
            else:
                quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts


def find_table(name: str, tables: Iterable[str]) -> str | None:
    """The entry of `tables` that names the same table as `name`, if any.

    The search_path is unknown, so when either side has no schema the bare names are compared:
    a wrong match keeps a finding, a missed one would drop it.
    """
    key = table_key(name)
    bare = key.rsplit(".", 1)[-1]
    fallback = None
    for entry in tables:
        entry_key = table_key(entry)
        if entry_key == key:
            return entry
        entry_bare = entry_key.rsplit(".", 1)[-1]
        if entry_bare == bare and ("." not in entry_key or "." not in key):
            fallback = entry
    return fallback


@dataclass(frozen=True)
class Hit:
    """The rule-specific part of a finding; the engine adds position, level scaling and metadata."""

    message: str
    # The table the finding is about: findings on tables created by this migration are dropped,
    # and declared row counts raise the level of rewrites and scans.
    table: str | None = None
    level: Risk | None = None
    safe_alternative: str | None = None


Check = Callable[[Statement, Context], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    # Strongest table lock the flagged statement takes, per the docs' lock table (None: no lock
    # on existing data, e.g. a type hint on a new column).
    lock: LockMode | None
    rewrites: bool
    scans: bool
    why: str
    safe_alternative: str
    default_level: Risk
    check: Check
    # Report once per transaction (or once per file outside transactions), not per statement.
    once_per_transaction: bool = False

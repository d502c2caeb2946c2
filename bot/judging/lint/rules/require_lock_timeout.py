"""A lock that blocks traffic, taken without lock_timeout, turns one slow query into an outage.

The DDL itself may take milliseconds, but it first waits for every running query on the table;
while it waits, every new query that its lock conflicts with queues behind it: all of them for
ACCESS EXCLUSIVE, every write for SHARE ROW EXCLUSIVE (a foreign key's lock on the referenced
table, CREATE TRIGGER) and the other write-blocking modes. With `SET lock_timeout` the migration
gives up (and can retry) instead of stalling the application. Index builds and REINDEX have
rules of their own (their fix, CONCURRENTLY, blocks no writes). Reported once per transaction,
and once for the statements of the file that run outside transactions.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if ctx.lock_timeout:
        return
    index_build = isinstance(stmt.node, ast.IndexStmt | ast.ReindexStmt)
    for lock in stmt.locks:
        if not lock.mode.blocks_writes:
            continue
        if lock.mode is LockMode.access_exclusive:
            waiting = "every query on it queues behind"
        elif index_build:
            continue
        else:
            waiting = "every write to it queues behind"
        yield Hit(
            f"takes {lock.mode} on {lock.relation} with no lock_timeout set: while it waits for "
            f"running queries, {waiting}",
            None if lock.index else lock.relation,
        )


RULE = Rule(
    id="require-lock-timeout",
    title="Traffic-blocking lock without lock_timeout",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="A DDL stuck behind one long query blocks the table's traffic (all of it for ACCESS "
    "EXCLUSIVE, writes for weaker write-blocking locks) until it gets the lock.",
    safe_alternative="SET lock_timeout = '5s' (or SET LOCAL inside the transaction) before the "
    "DDL, and retry the migration when it times out.",
    default_level=Risk.medium,
    check=check,
    once_per_transaction=True,
)

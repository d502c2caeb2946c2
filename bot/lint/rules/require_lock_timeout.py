"""ACCESS EXCLUSIVE without lock_timeout turns one slow query into an outage.

The DDL itself may take milliseconds, but it first waits for every running query on the table;
while it waits, every new query — reads included — queues behind it. With `SET lock_timeout` the
migration gives up (and can retry) instead of stalling the application. Reported once per
transaction, and once for the statements of the file that run outside transactions.
"""

from collections.abc import Iterator

from bot.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if ctx.lock_timeout:
        return
    for lock in stmt.locks:
        if lock.mode is LockMode.access_exclusive:
            yield Hit(
                f"takes ACCESS EXCLUSIVE on {lock.relation} with no lock_timeout set: while it "
                "waits for running queries, every query on it queues behind",
                None if lock.index else lock.relation,
            )


RULE = Rule(
    id="require-lock-timeout",
    title="ACCESS EXCLUSIVE lock without lock_timeout",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="A DDL stuck behind one long query blocks all traffic on the table until it gets the lock.",
    safe_alternative="SET lock_timeout = '5s' (or SET LOCAL inside the transaction) before the "
    "DDL, and retry the migration when it times out.",
    default_level=Risk.medium,
    check=check,
    once_per_transaction=True,
)

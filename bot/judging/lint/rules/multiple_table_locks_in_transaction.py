"""One transaction that blocks writes on several tables multiplies the lock-queue risk.

Locks are held until COMMIT: after locking table A, the transaction waits for B's lock while
everything queued on A waits too, and two migrations or a migration and the application can
deadlock. Tables created by the migration are invisible to others and do not count.
"""

from collections.abc import Iterable, Iterator

from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def _blocking(statements: Iterable[Statement], ctx: Context) -> set[str]:
    relations = {
        lock.relation
        for stmt in statements
        for lock in stmt.locks
        if lock.mode.blocks_writes and not lock.index
    }
    return {relation for relation in relations if not ctx.is_new(relation)}


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if not ctx.in_transaction:
        return
    held = _blocking(ctx.seen, ctx)
    # Only the tables this statement adds: it may also touch one already held (ADD COLUMN, then
    # a foreign key from that table to another one).
    added = _blocking([stmt], ctx) - held
    if held and added:
        yield Hit(
            f"locks {', '.join(sorted(added))} while the same transaction already blocks "
            f"writes to {', '.join(sorted(held))}: all of them stay locked until COMMIT",
            min(added),
        )


RULE = Rule(
    id="multiple-table-locks-in-transaction",
    title="Write-blocking locks on several tables in one transaction",
    lock=LockMode.share,
    rewrites=False,
    scans=False,
    why="Each table stays locked while the transaction waits for the next one's lock.",
    safe_alternative="One table per transaction: split the migration, or COMMIT between tables.",
    default_level=Risk.medium,
    check=check,
    once_per_transaction=True,
)

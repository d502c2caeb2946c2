"""One transaction that blocks writes on several tables multiplies the lock-queue risk.

Locks are held until COMMIT: after locking table A, the transaction waits for B's lock while
everything queued on A waits too, and two migrations or a migration and the application can
deadlock. Tables created by the migration are invisible to others and do not count.
"""

from collections.abc import Iterable, Iterator

from bot.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.verdict import Risk


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
    current = _blocking([stmt], ctx)
    held = _blocking(ctx.seen, ctx) - current if current else set()
    if held:
        yield Hit(
            f"locks {', '.join(sorted(current))} while the same transaction already blocks "
            f"writes to {', '.join(sorted(held))}: all of them stay locked until COMMIT",
            min(current),
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

"""DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the partitioned table.

The detach itself is a catalog change, but it needs the strongest lock on the parent: while it
waits for running queries on any partition, every new query on the whole partitioned table
queues behind it. PostgreSQL 14 added DETACH PARTITION ... CONCURRENTLY, which takes SHARE UPDATE
EXCLUSIVE (reads and writes go on) and cannot run inside a transaction block.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_DetachPartition):
        if getattr(cmd.def_, "concurrent", False):
            continue
        partition = sqlast.relation(cmd.def_.name)
        alternative = (
            None
            if ctx.options.pg_version >= 14
            else "PostgreSQL before 14 has no DETACH PARTITION CONCURRENTLY: SET lock_timeout "
            "and retry, in a quiet window."
        )
        yield Hit(
            f"DETACH PARTITION {partition} without CONCURRENTLY takes ACCESS EXCLUSIVE on "
            f"{table}: every query on the partitioned table waits",
            table,
            safe_alternative=alternative,
        )


RULE = Rule(
    id="require-concurrent-partition-detach",
    title="Detaching a partition without CONCURRENTLY",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Reads and writes on every partition queue behind the detach while it waits for its lock.",
    safe_alternative="ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+), outside "
    "any transaction block.",
    default_level=Risk.medium,
    check=check,
)

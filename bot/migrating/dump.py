"""A database copied from one run's cluster to another's: pg_dump, then pg_restore as the
change's role.

Each run has its own cluster, in its own network namespace, gone with the run; a migrated base
that later runs reuse (bot/engine/kept.py) therefore crosses clusters as a dump. The gate
takes it with its own superuser connection, before any of the change's code has run in that
run, and restores it as the change's role (`--role`, `--no-owner`): everything the restore
creates, and every expression it evaluates while rebuilding indexes and constraints, runs with
no more privilege than the change's own migrations, never as a superuser. What only a
superuser may create is the gate's and is not copied: its DDL log (schema `_gatekeeper`, made
again by ddl.install in the new run), its event triggers and the comments of the extensions it
created. One transaction: a restore that fails leaves the database as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.observing import ddl
from bot.sandbox.base import DatabaseStartError
from bot.sandbox.postgres import major, run_helper, tool

# Entries of `pg_restore --list` the change's role may not make; the new run's gate made its own.
_GATES = re.compile(r"^\d+; \d+ \d+ (?:EVENT TRIGGER|COMMENT - EXTENSION) ")


def dump(binaries: str, url: str, path: Path) -> None:
    """The database at `url` (the gate's connection) into `path`, in pg_dump's custom format.
    Refused (DatabaseStartError) when `binaries` are not of the server's major version: the
    dump could not be restored into a server like it."""
    with psycopg.connect(url) as conn:
        server = conn.info.server_version // 10000
    if major(binaries) != server:
        # pg_restore writes what its own version's server accepts: 18's sets
        # transaction_timeout, which 15 refuses.
        raise DatabaseStartError(
            f"the gate's pg_restore ({binaries}: PostgreSQL {major(binaries)}) cannot restore "
            f"into the sandbox's PostgreSQL {server}: set database.binaries to a PostgreSQL "
            f"{server} bin directory to reuse the base"
        )
    program = str(tool(binaries, "pg_dump"))
    options = ["--format=custom", f"--exclude-schema={ddl.SCHEMA}", "--file", str(path)]
    _run([program, *options], "pg_dump", url)


def restore(binaries: str, url: str, path: Path, role: str) -> None:
    """`path` into the database at `url` (the gate's connection, acting as `role`)."""
    restore_tool = str(tool(binaries, "pg_restore"))
    listing = _run([restore_tool, "--list", str(path)], "pg_restore --list")
    chosen = path.with_name(f"{path.name}.list")
    chosen.write_text("".join(line for line in listing.splitlines(True) if not _GATES.match(line)))
    options = ["--use-list", str(chosen), "--no-owner", f"--role={role}", "--exit-on-error"]
    _run([restore_tool, *options, "--single-transaction", str(path)], "pg_restore", url)


def _run(command: list[str], what: str, url: str = "") -> str:
    """Runs `command` on the database at `url`, whose password (a containers sandbox's) goes
    through the environment: a command line is readable by every process of the host."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if url:
        parts = conninfo_to_dict(url)
        password = parts.pop("password", None)
        if password is not None:
            env["PGPASSWORD"] = str(password)
        command = [*command, "--dbname", make_conninfo(**parts)]
    return run_helper(command, what, env=env)

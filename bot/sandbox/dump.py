"""A database copied from one run's sandbox to another's: pg_dump, then pg_restore as the
change's role.

Each run has its own database server (in its own network namespace, or its own containers),
gone with the run; a migrated base that later runs reuse (bot/engine/kept.py) therefore
crosses servers as a dump. The gate takes it as the superuser, before any of the change's
code has run in that run, and restores it as the change's role (`--role`, `--no-owner`):
everything the restore creates, and every expression it evaluates while loading rows and
rebuilding indexes and constraints, runs with no more privilege than the change's own
migrations, never as a superuser. What only a superuser may create is the gate's and is not
copied: its DDL log (a schema the caller names, made again in the new run), its event
triggers and the comments of the extensions it created. One transaction: a restore that
fails leaves the database as it was.

The programs are the server's own version (pg_restore writes what its own version's server
accepts: 18's sets transaction_timeout, which 15 refuses): the local sandbox runs its
installation's (`dump_with`, `restore_with`), the containers sandbox the database container's
(`Sandbox.dump_database`); both with the options said here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bot.sandbox.postgres import run_helper

# Entries of `pg_restore --list` the change's role may not make; the new run's gate made its own.
_GATES = re.compile(r"^\d+; \d+ \d+ (?:EVENT TRIGGER|COMMENT - EXTENSION) ")


def dump_options(exclude_schema: str) -> list[str]:
    """pg_dump's options, but its connection and output."""
    return ["--format=custom", f"--exclude-schema={exclude_schema}"]


def chosen(listing: str) -> str:
    """`pg_restore --list`'s output without the entries the change's role may not make."""
    return "".join(line for line in listing.splitlines(True) if not _GATES.match(line))


def restore_options(listing: str, role: str) -> list[str]:
    """pg_restore's options, but its connection and input: the entries of the file
    `listing`, as `role`, in one transaction, stopping at the first error."""
    return [
        *("--use-list", listing, "--no-owner", f"--role={role}"),
        *("--exit-on-error", "--single-transaction"),
    ]


def dump_with(bindir: Path, url: str, path: Path, exclude_schema: str) -> None:
    """The database at `url` into `path`, with the pg_dump of `bindir`."""
    options = [*dump_options(exclude_schema), "--file", str(path)]
    _run([str(bindir / "pg_dump"), *options], "pg_dump", url)


def restore_with(bindir: Path, url: str, path: Path, role: str) -> None:
    """`path` into the database at `url`, with the pg_restore of `bindir`."""
    program = str(bindir / "pg_restore")
    listing = path.with_name(f"{path.name}.list")
    listing.write_text(chosen(_run([program, "--list", str(path)], "pg_restore --list")))
    _run([program, *restore_options(str(listing), role), str(path)], "pg_restore", url)


def _run(command: list[str], what: str, url: str = "") -> str:
    """Runs `command` on the database at `url` (the local sandbox's superuser, through its
    0700 socket directory: the URL holds no password)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return run_helper([*command, "--dbname", url] if url else command, what, env=env)

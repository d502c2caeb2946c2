"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.app.store import Store
from bot.sandbox.local import LocalSandbox


@pytest.fixture(scope="session")
def pg_sandbox() -> Iterator[LocalSandbox]:
    """One real PostgreSQL for every test that only needs SQL: starting one per test adds up.

    Tests that change server-wide state (roles, settings, other databases) must undo it.
    """
    with LocalSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def fresh_database(pg_sandbox: LocalSandbox) -> Iterator[str]:
    """The URL of a new, empty database on the shared server, dropped after the test, so
    event triggers, schemas and tables never leak between tests."""
    name = f"t_{uuid.uuid4().hex}"
    pg_sandbox.psql(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(**{**conninfo_to_dict(pg_sandbox.database_url), "dbname": name})
    finally:
        pg_sandbox.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def store(fresh_database: str) -> Iterator[Store]:
    """The service's own tables in a fresh database; its connection pool closed after."""
    store = Store(fresh_database)
    store.migrate()
    yield store
    store.close()

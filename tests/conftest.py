"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.sandbox.local import LocalSandbox


@pytest.fixture(scope="session")
def pg_sandbox() -> Iterator[LocalSandbox]:
    """One real PostgreSQL for every test that only needs SQL: starting one per test adds up.

    Tests that change server-wide state (roles, settings, other databases) must undo it.
    """
    with LocalSandbox() as sandbox:
        yield sandbox

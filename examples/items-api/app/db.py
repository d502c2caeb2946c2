"""The engine and one session per request."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from .config import DatabaseSettings


def make_engine(settings: DatabaseSettings) -> Engine:
    # pre-ping: a connection the database closed (a restart, an idle timeout) is replaced
    # instead of failing the next request.
    return create_engine(settings.url, pool_pre_ping=True)

"""Settings from separate environment variables, checked before anything connects.

The database comes as parts (`POSTGRES_SERVER`, `POSTGRES_PORT`, ...) rather than one URL,
as container platforms hand them out. Each entry point asks only for what it uses (Alembic
needs the database, the API also the signing key, the seed script the first superuser), and
a missing or empty variable stops it with one line naming every problem, not a libpq error
about a Unix socket nobody asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import URL


class ConfigError(Exception):
    """The environment cannot run this entry point; the message lists every problem."""


@dataclass(frozen=True)
class DatabaseSettings:
    server: str
    port: int
    user: str
    password: str
    name: str

    @property
    def url(self) -> URL:
        """A URL object, so a password with `@` or `%` needs no quoting anywhere."""
        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.server,
            port=self.port,
            database=self.name,
        )


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    secret_key: str
    access_token_expire_minutes: int = 60 * 24 * 8


@dataclass(frozen=True)
class SuperuserSettings:
    database: DatabaseSettings
    email: str
    password: str


def load_database_settings(environ: Mapping[str, str] = os.environ) -> DatabaseSettings:
    problems: list[str] = []
    values = {
        name: _required(environ, name, problems)
        for name in ("POSTGRES_SERVER", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    }
    port_text = environ.get("POSTGRES_PORT", "").strip() or "5432"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        problems.append(f"POSTGRES_PORT must be a TCP port number, not {port_text!r}")
    _raise(problems)
    return DatabaseSettings(
        server=values["POSTGRES_SERVER"],
        port=int(port_text),
        user=values["POSTGRES_USER"],
        password=values["POSTGRES_PASSWORD"],
        name=values["POSTGRES_DB"],
    )


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    problems: list[str] = []
    database = _database(environ, problems)
    secret_key = _required(environ, "SECRET_KEY", problems)
    _raise(problems)
    assert database is not None
    return Settings(database=database, secret_key=secret_key)


def load_superuser_settings(environ: Mapping[str, str] = os.environ) -> SuperuserSettings:
    problems: list[str] = []
    database = _database(environ, problems)
    email = _required(environ, "FIRST_SUPERUSER", problems)
    password = _required(environ, "FIRST_SUPERUSER_PASSWORD", problems)
    _raise(problems)
    assert database is not None
    return SuperuserSettings(database=database, email=email, password=password)


def _required(environ: Mapping[str, str], name: str, problems: list[str]) -> str:
    value = environ.get(name, "")
    if not value.strip():
        problems.append(f"{name} is not set or empty")
    return value


def _database(environ: Mapping[str, str], problems: list[str]) -> DatabaseSettings | None:
    """The database's settings, or None with their problems added to the caller's."""
    try:
        return load_database_settings(environ)
    except ConfigError as exc:
        problems.extend(exc.args[0].split("; "))
        return None


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))

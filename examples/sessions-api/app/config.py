"""Settings from the environment, checked before anything touches the database.

A wrong DATABASE_URL otherwise surfaces later as a confusing libpq error (an empty URL
quietly means "the local Unix socket as the current OS user"), so the service refuses to
start with a message that says which variable is wrong and what it should look like.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

_URL_EXAMPLE = "postgresql://user:password@127.0.0.1:5432/app"


class ConfigError(Exception):
    """The environment cannot run the service; the message lists every problem."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    jwt_secret: str

    @property
    def database_label(self) -> str:
        """host:port/dbname, for logs: never the password."""
        parts = urlsplit(self.database_url)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    problems: list[str] = []
    database_url = environ.get("DATABASE_URL", "").strip()
    problem = _database_url_problem(database_url)
    if problem:
        problems.append(f"DATABASE_URL {problem}")
    jwt_secret = environ.get("JWT_SECRET", "")
    if not jwt_secret:
        problems.append("JWT_SECRET is not set (the HS256 key that signs API tokens)")
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(database_url=database_url, jwt_secret=jwt_secret)


def _database_url_problem(url: str) -> str | None:
    if not url:
        return f"is not set; expected a TCP URL such as {_URL_EXAMPLE}"
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return f"must start with postgresql://, e.g. {_URL_EXAMPLE}"
    host = parse_qs(parts.query).get("host", [unquote(parts.hostname or "")])[0]
    if not host or host.startswith("/"):
        return f"names no TCP host (Unix sockets are not supported); e.g. {_URL_EXAMPLE}"
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        return f"has an invalid port; e.g. {_URL_EXAMPLE}"
    return None

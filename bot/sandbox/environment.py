"""The environment the change's code runs in: constructed, never inherited.

Build, migration and seed commands, the API under test and the sandbox's PostgreSQL are code
nobody has reviewed yet (or, for PostgreSQL, a process that such code can steer). Whatever
Gatekeeper's own process holds — the webhook secret, the App key, GitHub tokens, the store's
URL, an Actions step's secrets — must not reach them. So their environment is built from an
allowlist: a fixed PATH that starts with the interpreter Gatekeeper runs on (a policy's
`python -m …` finds it even when the virtualenv was never activated), a fixed locale and time
zone, a scratch HOME and TMPDIR, and then only what the policy asks for.

The policy's `${NAME}` references (`api.env`, `auth.secret_env`) read from the *passed*
variables only: those the operator names in `GATEKEEPER_PASS_ENV` (comma-separated). The
service's own credentials are never passable, whatever the list says: a policy lives in the
repository, and a repository must not be able to ask for the keys of the gate that judges it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

PASS_ENV = "GATEKEEPER_PASS_ENV"

# Gatekeeper's settings (GATEKEEPER_*: webhook secret, App key, tokens), GitHub's and Actions'
# tokens, and the store's URL.
_NEVER_PASSED = re.compile(
    r"(GATEKEEPER_.*|GITHUB_TOKEN|GH_TOKEN|GH_ENTERPRISE_TOKEN|ACTIONS_.*|DATABASE_URL)"
)
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class PassError(ValueError):
    """GATEKEEPER_PASS_ENV names a variable that may never be passed."""


def passed(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the operator passes to the policy (GATEKEEPER_PASS_ENV), with values."""
    names = [name.strip() for name in environ.get(PASS_ENV, "").split(",") if name.strip()]
    refused = [name for name in names if _NEVER_PASSED.fullmatch(name)]
    if refused:
        raise PassError(
            f"{PASS_ENV} names {', '.join(refused)}: Gatekeeper's own settings, GitHub tokens "
            "and DATABASE_URL are never handed to the code under review"
        )
    return {name: environ[name] for name in names if name in environ}


def interpreter_bin() -> str:
    """The directory of the interpreter Gatekeeper runs on (a venv's bin, not resolved: its
    `python` is what has Gatekeeper's dependencies)."""
    return str(Path(sys.executable).parent)


def base(home: Path, tmp: Path) -> dict[str, str]:
    """What every process of the change starts from."""
    return {
        "PATH": ":".join((interpreter_bin(), *_SYSTEM_PATH)),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "HOME": str(home),
        "TMPDIR": str(tmp),
    }


def server() -> dict[str, str]:
    """PostgreSQL's own processes: a path, a locale, nothing of ours."""
    return {"PATH": ":".join(_SYSTEM_PATH), "LANG": "C.UTF-8", "TZ": "UTC"}


# The sandbox database in parts, for services that read a host, a port and a password rather
# than a URL (`POSTGRES_SERVER: ${DB_HOST}` in `api.env`). Build, migration, seed and API
# commands all get them.
DATABASE_VARIABLES = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")


def database(url: str) -> dict[str, str]:
    """DB_HOST … DB_NAME of a PostgreSQL URL; with an empty URL, empty values (what a policy's
    references are checked against before the sandbox exists)."""
    if not url:
        return dict.fromkeys(DATABASE_VARIABLES, "")
    parts = conninfo_to_dict(url)
    return {
        "DB_HOST": str(parts.get("host", "")),
        "DB_PORT": str(parts.get("port", "5432")),
        "DB_USER": str(parts.get("user", "")),
        "DB_PASSWORD": str(parts.get("password", "")),
        "DB_NAME": str(parts.get("dbname", "")),
    }

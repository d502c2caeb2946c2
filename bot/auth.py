"""Credentials for the API under test, made the way its real clients get them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import jwt

from bot.policy.model import Auth
from bot.sandbox.environment import PASS_ENV
from bot.yamlfile import ConfigError


def auth_headers(
    auth: Auth, source: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers to send; a missing secret is a configuration error that names the variable."""
    if auth.type == "none":
        return {}
    environ = os.environ if environ is None else environ
    secret = environ.get(auth.secret_env or "")
    if not secret:
        raise ConfigError(
            source,
            [
                f"{source}: auth.secret_env names ${auth.secret_env}, which is not passed: set "
                f"it and name it in {PASS_ENV}"
            ],
        )
    if auth.type == "bearer":
        return {auth.header: f"Bearer {secret}"}
    now = int(time.time())
    claims = {"iat": now, "nbf": now, "exp": now + auth.ttl_seconds, **auth.claims}
    return {auth.header: f"Bearer {jwt.encode(claims, secret, algorithm=auth.algorithm)}"}

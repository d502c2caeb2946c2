"""Password hashes and access tokens.

Passwords are hashed with PBKDF2-HMAC-SHA256 from the standard library (no native
dependency to build), 600,000 iterations as OWASP recommends, stored as
`pbkdf2_sha256$<iterations>$<salt>$<hash>` so the count can be raised later without
invalidating existing hashes. Tokens are HS256 JWTs whose `sub` is the user's UUID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
ITERATIONS = 600_000
_SCHEME = "pbkdf2_sha256"


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """False for a wrong password and for a hash this module did not write."""
    try:
        scheme, iterations, salt, expected = hashed.split("$")
        if scheme != _SCHEME:
            return False
        digest = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(_b64(digest), expected)


def create_access_token(subject: str, secret_key: str, expires: timedelta) -> str:
    claims = {"sub": subject, "exp": datetime.now(UTC) + expires}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def token_subject(token: str, secret_key: str) -> str | None:
    """The `sub` of a valid, unexpired token, or None."""
    try:
        claims = jwt.decode(
            token, secret_key, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.InvalidTokenError:
        return None
    subject = claims["sub"]
    return subject if isinstance(subject, str) else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

"""The sealed cookies of the sign-in: the session, and the OAuth `state` of a sign-in under way.

The session is a cookie, HttpOnly, SameSite=Lax, Secure when the public URL is https, with an
expiry (`bot.app.login` sets it). It carries the GitHub token (to refresh the repository list),
so it is sealed with AES-GCM rather than only signed: authenticated like a signature, and
unreadable, so a copied cookie does not hand out a token that works against GitHub's API. The
key is derived from GATEKEEPER_SESSION_SECRET, else from a secret kept in the state dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.app.settings import Settings

SESSION_COOKIE = "gatekeeper_session"
STATE_COOKIE = "gatekeeper_oauth"
SECRET_FILE = "session-secret"


def session_key(settings: Settings) -> bytes:
    """The key sealing cookies: from GATEKEEPER_SESSION_SECRET, else a random secret created
    once in the state dir (so sessions survive restarts). Several `serve` processes behind one
    load balancer need the same secret: set it."""
    if settings.session_secret is not None:
        secret = settings.session_secret.get_secret_value().encode()
    else:
        secret = _state_secret(settings.state_dir / SECRET_FILE)
    return hmac.new(secret, b"gatekeeper session cookies v1", hashlib.sha256).digest()


def _state_secret(path: Path) -> bytes:
    """Read the secret at `path`, creating it (mode 0600) if absent. O_EXCL: two processes
    starting together agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            text = path.read_text().strip()
            if text:
                return text.encode()
            time.sleep(0.02)
        raise RuntimeError(
            f"{path} is empty: remove it, or set GATEKEEPER_SESSION_SECRET"
        ) from None
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


class Seal:
    """AES-GCM over JSON, with what the value is for as associated data (a state cookie can
    never pass for a session) and an expiry inside."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    def close(self, purpose: str, data: dict[str, Any], seconds: float) -> str:
        nonce = secrets.token_bytes(12)
        plain = json.dumps({**data, "exp": int(time.time() + seconds)}).encode()
        sealed = nonce + self._aead.encrypt(nonce, plain, purpose.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The data, or None if `value` is missing, forged, for another purpose or expired."""
        if not value or len(value) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], purpose.encode())
            data = json.loads(plain)
        except (ValueError, InvalidTag):  # binascii.Error is a ValueError
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        return data if data["exp"] > time.time() else None

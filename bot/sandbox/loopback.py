"""HTTP clients for the API under test, which listens on loopback.

Two things every such client needs: `trust_env=False`, so a proxy from the environment never
sits between the gate and the sandbox, and one TLS context for the whole process — httpx
loads the CA bundle again for every client otherwise (about 30 ms each, and the gate opens
one per suite and per health wait).
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Any

import httpx


@cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def client(**options: Any) -> httpx.Client:
    """An httpx.Client for the sandbox: `options` as httpx takes them."""
    return httpx.Client(trust_env=False, verify=_tls(), **options)

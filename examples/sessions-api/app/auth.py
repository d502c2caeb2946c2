"""Bearer JWT authentication: HS256 tokens whose `sub` claim names the user.

Every /api/v1 route depends on `current_user`, so an unauthenticated request is answered
401 before any database work, the way the Go original's middleware did.
"""

from __future__ import annotations

from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False)


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers=challenge)
    try:
        claims = jwt.decode(
            credentials.credentials,
            request.app.state.settings.jwt_secret,
            algorithms=["HS256"],
            options={"require": ["sub"]},
        )
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, f"invalid token: {exc}", headers=challenge) from None
    return str(claims["sub"])


User = Annotated[str, Depends(current_user)]

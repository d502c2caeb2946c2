"""OAuth2 password flow: a form body in, a bearer token out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy import select

from ..deps import SessionDep
from ..models import User
from ..security import create_access_token, verify_password

router = APIRouter(tags=["login"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


@router.post("/login/access-token")
def login_access_token(
    request: Request,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """The form's `username` is the user's email. A wrong email and a wrong password get
    the same answer, so the endpoint does not tell which emails have accounts."""
    user = session.scalar(select(User).where(User.email == form.username))
    if user is None or not verify_password(form.password, user.hashed_password):
        raise HTTPException(400, "Incorrect email or password")
    if not user.is_active:
        raise HTTPException(400, "Inactive user")
    user.last_login_at = datetime.now(UTC)
    session.commit()
    settings = request.app.state.settings
    expires = timedelta(minutes=settings.access_token_expire_minutes)
    return Token(access_token=create_access_token(str(user.id), settings.secret_key, expires))

"""The signed-in user's own account."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ..deps import CurrentUser, SessionDep
from ..models import User

router = APIRouter(prefix="/users", tags=["users"])


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    last_login_at: datetime | None


class UserUpdateMe(BaseModel):
    email: str | None = Field(default=None, min_length=3, max_length=255)
    full_name: str | None = Field(default=None, max_length=100)


@router.get("/me")
def read_user_me(current_user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(current_user)


@router.patch("/me")
def update_user_me(
    body: UserUpdateMe, session: SessionDep, current_user: CurrentUser
) -> UserPublic:
    if body.email is not None and body.email != current_user.email:
        taken = session.scalar(select(User.id).where(User.email == body.email))
        if taken is not None:
            raise HTTPException(409, "User with this email already exists")
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(current_user, field, value)
    session.commit()
    return UserPublic.model_validate(current_user)

"""Items: each belongs to the user who created it; a superuser sees everyone's."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select

from ..deps import CurrentUser, SessionDep
from ..models import Item, User

router = APIRouter(prefix="/items", tags=["items"])
log = logging.getLogger("app.items")


class ItemCreate(BaseModel):
    title: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=255)


class ItemUpdate(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    assignee_id: uuid.UUID | None = None


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    owner_id: uuid.UUID
    created_at: datetime
    assignee_id: uuid.UUID | None


class ItemsPublic(BaseModel):
    data: list[ItemPublic]
    count: int


class Message(BaseModel):
    message: str


def _visible(user: User) -> list[ColumnElement[bool]]:
    """The WHERE clauses that limit a query to the items `user` may see."""
    return [] if user.is_superuser else [Item.owner_id == user.id]


def _get_item(session: SessionDep, user: User, item_id: uuid.UUID) -> Item:
    item = session.get(Item, item_id)
    if item is None or not (user.is_superuser or item.owner_id == user.id):
        raise HTTPException(404, "Item not found")
    return item


@router.get("/")
def read_items(
    session: SessionDep, current_user: CurrentUser, skip: int = 0, limit: int = 100
) -> ItemsPublic:
    where = _visible(current_user)
    count = session.scalar(select(func.count()).select_from(Item).where(*where))
    items = session.scalars(
        select(Item).where(*where).order_by(Item.created_at.desc()).offset(skip).limit(limit)
    )
    return ItemsPublic(data=[ItemPublic.model_validate(item) for item in items], count=count or 0)


@router.get("/{item_id}")
def read_item(item_id: uuid.UUID, session: SessionDep, current_user: CurrentUser) -> ItemPublic:
    return ItemPublic.model_validate(_get_item(session, current_user, item_id))


@router.post("/", status_code=201)
def create_item(body: ItemCreate, session: SessionDep, current_user: CurrentUser) -> ItemPublic:
    item = Item(**body.model_dump(), owner_id=current_user.id)
    session.add(item)
    session.commit()
    log.info("Created item %s for %s", item.id, current_user.email)
    return ItemPublic.model_validate(item)


@router.put("/{item_id}")
def update_item(
    item_id: uuid.UUID, body: ItemUpdate, session: SessionDep, current_user: CurrentUser
) -> ItemPublic:
    item = _get_item(session, current_user, item_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("assignee_id") is not None and session.get(User, changes["assignee_id"]) is None:
        raise HTTPException(422, "Assignee not found")
    for field, value in changes.items():
        setattr(item, field, value)
    session.commit()
    return ItemPublic.model_validate(item)


@router.delete("/{item_id}")
def delete_item(item_id: uuid.UUID, session: SessionDep, current_user: CurrentUser) -> Message:
    item = _get_item(session, current_user, item_id)
    session.delete(item)
    session.commit()
    log.info("Deleted item %s", item_id)
    return Message(message="Item deleted successfully")

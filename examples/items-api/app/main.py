"""The FastAPI application: `uvicorn app.main:app`.

It does not migrate at start-up: `alembic upgrade head` does, before a deployment switches
traffic over, so two instances starting at once never race to change the schema.
Settings are read at import, so a missing variable stops uvicorn with one line saying which,
before it binds its port.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from .config import ConfigError, load_settings
from .db import make_engine
from .routes import items, login, users, utils

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

try:
    settings = load_settings()
except ConfigError as exc:
    sys.exit(f"configuration error: {exc}")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.settings = settings
    app.state.engine = make_engine(settings.database)
    yield
    app.state.engine.dispose()


app = FastAPI(title="items-api", lifespan=lifespan)
api = APIRouter(prefix="/api/v1")
api.include_router(login.router)
api.include_router(users.router)
api.include_router(utils.router)
api.include_router(items.router)
app.include_router(api)

"""HTTP routes of the sessions API.

A database error is logged as `ERROR <action>: <server message>` and answered with a 500
that carries the same message, so the evidence is in the response and in the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from . import db, sessions, templates
from .auth import User, current_user
from .config import ConfigError, load_settings
from .logs import fatal, log


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate before serving: the API never answers on a schema its code does not match."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        fatal(f"configuration error: {exc}")
    log.info("Starting sessions API, database %s", settings.database_label)
    try:
        db.migrate(settings.database_url)
    except psycopg.Error as exc:
        fatal(f"migration failed: {db.error_message(exc)}")
    log.info("Database migrations completed successfully")
    app.state.settings = settings
    yield


app = FastAPI(title="sessions-api", lifespan=lifespan)
api = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user)])


def _connection(request: Request) -> Iterator[db.Connection]:
    try:
        conn = db.connect(request.app.state.settings.database_url)
    except psycopg.OperationalError as exc:
        log.error("ERROR connecting to database: %s", db.error_message(exc))
        raise HTTPException(503, "database unavailable") from None
    with conn:
        yield conn


Conn = Annotated[db.Connection, Depends(_connection)]


@contextmanager
def _database_errors(action: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        message = db.error_message(exc)
        log.error("ERROR %s: %s", action, message)
        raise HTTPException(500, f"error {action}: {message}") from None


class CreateSession(BaseModel):
    template_name: str = Field(min_length=1)
    tags: list[str] | None = None


@app.get("/healthz")
def healthz(conn: Conn) -> dict[str, str]:
    with _database_errors("checking health"):
        conn.execute("SELECT 1")
    return {"status": "ok"}


@api.get("/templates")
def list_templates(conn: Conn) -> dict[str, Any]:
    with _database_errors("listing templates"):
        rows = templates.list_templates(conn)
    return {"templates": rows, "total": len(rows)}


@api.get("/templates/{name}")
def read_template(name: str, conn: Conn) -> dict[str, Any]:
    with _database_errors(f"reading template {name}"):
        template = templates.get_template(conn, name)
    if template is None:
        raise HTTPException(404, f"template {name} not found")
    return template


@api.post("/sessions", status_code=201)
def create_session(body: CreateSession, user: User, conn: Conn) -> dict[str, Any]:
    with _database_errors("creating session"):
        template = templates.get_template(conn, body.template_name)
        if template is None:
            raise HTTPException(404, f"template {body.template_name} not found")
        try:
            session = sessions.create_session(conn, user, template["name"], body.tags)
        except sessions.QuotaExceededError as exc:
            raise HTTPException(429, str(exc)) from None
        except sessions.NoAgentError as exc:
            raise HTTPException(503, str(exc)) from None
    return sessions.to_json(session)


@api.get("/sessions")
def list_sessions(user: User, conn: Conn) -> dict[str, Any]:
    with _database_errors("listing sessions"):
        rows = sessions.list_user_sessions(conn, user)
    return {"sessions": [sessions.to_json(row) for row in rows], "total": len(rows)}


@api.get("/sessions/{session_id}")
def read_session(session_id: str, user: User, conn: Conn) -> dict[str, Any]:
    with _database_errors("reading session"):
        session = sessions.get_session(conn, user, session_id)
    if session is None:
        raise HTTPException(404, f"session {session_id} not found")
    return sessions.to_json(session)


@api.delete("/sessions/{session_id}", status_code=202)
def delete_session(session_id: str, user: User, conn: Conn) -> dict[str, str]:
    with _database_errors("deleting session"):
        deleted = sessions.delete_session(conn, user, session_id)
    if not deleted:
        raise HTTPException(404, f"session {session_id} not found")
    return {"name": session_id, "message": "Session termination requested"}


app.include_router(api)

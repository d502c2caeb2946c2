"""Operational endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ..deps import SessionDep

router = APIRouter(prefix="/utils", tags=["utils"])


@router.get("/health-check")
def health_check(session: SessionDep) -> dict[str, str]:
    """Healthy means the database answers too: a load balancer should not send traffic to
    an instance that can only fail."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}

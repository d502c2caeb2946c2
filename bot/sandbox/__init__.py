"""Sandboxes that run PostgreSQL and the API under test."""

from bot.sandbox.base import (
    ApiSpec,
    ApiStartError,
    DatabaseStartError,
    Sandbox,
    SandboxError,
)

__all__ = ["ApiSpec", "ApiStartError", "DatabaseStartError", "Sandbox", "SandboxError"]

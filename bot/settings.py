"""The service's settings, from the environment (GATEKEEPER_*) or `gatekeeper serve` options."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    # Root's home is closed to the unprivileged account that runs the embedded PostgreSQL.
    if os.geteuid() == 0:
        return Path("/var/lib/gatekeeper")
    return Path(platformdirs.user_state_dir("gatekeeper"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEKEEPER_", extra="ignore")

    webhook_secret: SecretStr = Field(description="The App's webhook secret (HMAC SHA-256).")
    app_id: int | None = Field(
        None,
        description="The App's id; its key comes from GATEKEEPER_APP_PRIVATE_KEY (PEM text) "
        "or GATEKEEPER_APP_PRIVATE_KEY_FILE.",
    )
    github_token: SecretStr | None = Field(None, description="Personal token, for local use.")
    github_api_url: str = "https://api.github.com"
    clone_url: str = Field(
        "https://x-access-token:{token}@github.com/{repository}.git",
        description="Where to clone from; {token} and {repository} are filled in.",
    )
    database_url: str | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="The service's own database; without it, an embedded PostgreSQL "
        "in state_dir is started and kept across restarts.",
    )
    state_dir: Path = Field(default_factory=default_state_dir)
    status_context: str = "gatekeeper"
    public_url: str | None = Field(None, description="Base URL for links to reports.")
    default_policy: Path | None = None
    max_body_bytes: int = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
    workers: int = Field(1, ge=1)
    host: str = "127.0.0.1"
    port: int = 8080
    redelivery_interval: float = Field(600, description="Seconds between redelivery sweeps.")
    watch_interval: float = Field(
        30, description="Seconds between checks of runs dispatched to GitHub Actions."
    )
    retention_days: int = Field(
        90, ge=1, description="Finished runs and deliveries older than this are purged at start."
    )

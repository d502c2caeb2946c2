"""The service's settings, from the environment (GATEKEEPER_*) or `gatekeeper serve` options."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, model_validator
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
    github_web_url: str | None = Field(
        None,
        description="GitHub's web host, for sign-in and links; derived from github_api_url "
        "(api.github.com -> github.com, https://HOST/api/v3 -> https://HOST) if unset.",
    )
    clone_url: str = Field(
        "https://github.com/{repository}.git",
        description="Where to clone from; {repository} is filled in. The installation token "
        "goes in an HTTP header of the clone's git calls; credentials in the URL are dropped.",
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
    workers: int = Field(
        1, ge=1, description="Runs one worker process (or `serve`'s own worker) does at once."
    )
    repo_concurrency: int = Field(
        1, ge=1, description="Runs of one repository validated at once, across all workers."
    )
    worker: bool = Field(
        True,
        description="`serve` runs a worker in-process; turn off when `gatekeeper worker` "
        "processes do the work.",
    )
    attempts: int = Field(
        4, ge=1, description="Tries of a run that fails transiently (GitHub, database, sandbox)."
    )
    backoff: int = Field(
        3, ge=1, description="Retry n of a run waits backoff**n seconds (3: 3, 9, 27 s)."
    )
    deadline: float = Field(
        3600,
        gt=0,
        description="Seconds from delivery to final status until 20 successful runs give a p95.",
    )
    deadline_margin: float = Field(
        600, ge=0, description="Seconds added to the p95 of successful runs for the deadline."
    )
    sweep_interval: float = Field(
        5, gt=0, description="Seconds between sweeps (stalled jobs, deadlines, re-posts)."
    )
    heartbeat: float = Field(10, gt=0, description="Seconds between a worker's heartbeats.")
    stalled_after: float = Field(
        30, gt=0, description="A worker silent this long is dead; its job goes to another."
    )
    repost_after: float = Field(
        10, ge=0, description="Seconds before a final status GitHub refused is posted again."
    )
    shutdown_grace: float = Field(
        60,
        ge=0,
        description="On SIGTERM, seconds running validations get to finish before they are "
        "stopped and queued again.",
    )
    log_json: bool = Field(
        True, description="One JSON object per log line, with the delivery and run ids."
    )
    host: str = "127.0.0.1"
    port: int = 8080
    redelivery_interval: float = Field(600, description="Seconds between redelivery sweeps.")
    watch_interval: float = Field(
        30, description="Seconds between checks of runs dispatched to GitHub Actions."
    )
    retention_days: int = Field(
        90, ge=1, description="Finished runs and deliveries older than this are purged hourly."
    )
    # -- who may read the run history (bot.app.login)
    oauth_client_id: str | None = Field(
        None, description="The App's client id: people sign in with GitHub through it."
    )
    oauth_client_secret: SecretStr | None = Field(
        None, description="The App's client secret, for the sign-in's code exchange."
    )
    dashboard_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="A bearer token for API clients (`Authorization: Bearer ...`); sees every "
        "run. At least 16 characters.",
    )
    session_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="Seals the session cookies; without it a random one is kept in "
        "state_dir/session-secret. Set it when several `serve` processes share the sessions.",
    )
    session_hours: float = Field(
        8, gt=0, description="Hours a sign-in lasts (at most as long as GitHub's token)."
    )
    session_refresh: float = Field(
        300,
        gt=0,
        description="Seconds a signed-in person's list of readable repositories is kept "
        "before GitHub is asked again.",
    )

    @model_validator(mode="after")
    def _oauth_pair(self) -> Settings:
        if (self.oauth_client_id is None) != (self.oauth_client_secret is None):
            raise ValueError(
                "set both GATEKEEPER_OAUTH_CLIENT_ID and GATEKEEPER_OAUTH_CLIENT_SECRET, or neither"
            )
        return self

    @property
    def web_url(self) -> str:
        """GitHub's web host: https://github.com, or an Enterprise server's."""
        if self.github_web_url:
            return self.github_web_url.rstrip("/")
        parts = urlsplit(self.github_api_url.rstrip("/"))
        if parts.netloc == "api.github.com":
            return "https://github.com"
        return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/api/v3')}"

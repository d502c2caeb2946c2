"""The Job: what to validate. Every entry point (CLI, webhook, Actions) builds one."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Job(BaseModel):
    repository: str = Field(description="owner/name on GitHub, or a local path.")
    base_ref: str
    head_ref: str
    base_sha: str
    head_sha: str
    merge_sha: str | None = None
    pr_number: int | None = None
    author: str | None = None
    trigger: str = "cli"
    policy_source: str = ""

"""The Job: what to validate. Every entry point (CLI, webhook, Actions) builds one."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BatchMember(BaseModel):
    """One change of a batch: a pull request of a merge group, or a `--head` of the CLI."""

    ref: str = Field(description="The builder branch (or the ref given on the command line).")
    sha: str
    pr_number: int | None = None
    title: str | None = None

    @property
    def label(self) -> str:
        """How reasons and comments name it: "#12 builder/a" for a pull request, where the
        number is what a maintainer finds it by; the ref alone otherwise."""
        return self.ref if self.pr_number is None else f"#{self.pr_number} {self.ref}"


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
    batch: list[BatchMember] = Field(
        default_factory=list,
        description="The changes validated together, in merge order (a merge group's pull "
        "requests, or several --head); head_sha is their combination. Empty for one change.",
    )

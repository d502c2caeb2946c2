"""Fixtures for the GitHub Actions edge: the fake GitHub of tests/github (the same fixture
object, so the Actions path is held to the same OpenAPI validation as the service), and
helpers that run `gatekeeper validate --github-event` the way a workflow step does."""

from __future__ import annotations

from tests.github.conftest import demo_git_repo, fake_github, repo, served

__all__ = ["demo_git_repo", "fake_github", "repo", "served"]

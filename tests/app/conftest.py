"""Fixtures for the App's tests: the fake GitHub of tests/github (the same fixture objects, so
the service is held to GitHub's OpenAPI description) and the repositories it serves."""

from __future__ import annotations

from tests.github.conftest import demo_git_repo, fake_github, repo, served

__all__ = ["demo_git_repo", "fake_github", "repo", "served"]

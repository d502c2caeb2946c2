"""Parity: the local and the containers sandbox give every demo case the same verdict.

The local sandbox is the fast default and the containers sandbox the faithful one (the demo
API built from its Dockerfile, PostgreSQL 15 from an image instead of 18 from a wheel). A
difference in a decision or a risk level means one of them misjudges a change, so this runs
in CI, on the engine `.ci/run` prepares; without an engine it is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from bot.cli.demo import SECRET_ENV, case_job, load_builder
from bot.engine.pipeline import validate
from bot.judging.verdict import Verdict
from bot.policy import load_policy
from bot.resources import data_path
from bot.sandbox import images
from bot.sandbox.environment import PASS_ENV
from bot.sandbox.select import factory

ENGINE_PROBLEM = images.engine_problem(images.LOCAL_IMAGES)


@pytest.mark.slow
@pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=str(ENGINE_PROBLEM))
def test_local_and_containers_sandboxes_decide_every_demo_case_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # What `gatekeeper demo` sets up: a signing secret both sides share, passed to the API.
    monkeypatch.setenv(SECRET_ENV, secrets.token_urlsafe(32))
    monkeypatch.setenv(PASS_ENV, SECRET_ENV)
    loaded = load_policy(data_path("policies") / "sessions-api.yml")
    repo = tmp_path / "sessions-api"
    cases = load_builder().build(repo)
    assert len(cases) >= 5

    def run(case, kind: str) -> Verdict:
        return validate(case_job(case, repo, loaded), repo, loaded, factory(kind))

    client = images.connect()

    def ours() -> set[str]:
        """Labelled containers this process made (other processes may run sandboxes too)."""
        found = client.containers.list(all=True, filters={"label": images.LABEL_RUN})
        return {c.name for c in found if c.labels.get(images.LABEL_PID) == str(os.getpid())}

    before = ours()
    for case in cases:
        local, containers = run(case, "local"), run(case, "containers")
        assert not ours() - before, f"{case.name}: containers left behind"
        assert containers.decision.value != "error", containers.summary
        assert (local.decision, local.risk) == (containers.decision, containers.risk), (
            f"{case.name}: local {local.summary} / containers {containers.summary}"
        )
        assert local.decision.value == case.expected_decision, local.summary
        # The same criteria pass and fail: the decision agrees for the same reasons.
        statuses = {c.id: c.status for c in local.criteria}
        assert statuses == {c.id: c.status for c in containers.criteria}, case.name
    client.close()

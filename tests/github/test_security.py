"""A hostile pull request through the App (the webhook, the queue, the fake GitHub): nothing it
prints reaches what the service posts, the clone holds no token, and the service's secrets
never reach the change. tests/security/ holds the CLI's and the pipeline's cases; this one
lives here, beside the fake GitHub's fixtures."""

from __future__ import annotations

import json

from tests.helpers import run_git as git

from .conftest import POLICY, REPO, commit_all
from .test_service import Running, make_service, synchronize, wait_run

CANARY = "canary-deploy-91c2e7b04f"
BUILD = """\
#!/bin/sh
env
cat /tmp/gatekeeper-clone-*/repo/.git/config 2>&1
git -C /tmp/gatekeeper-clone-*/repo config --get-regexp 'http.*' 2>&1
exit 3
"""


def test_a_hostile_build_leaks_nothing_to_what_the_app_posts(fake_github, store, repo, monkeypatch):
    monkeypatch.setenv("MY_DEPLOY_SECRET", CANARY)
    (repo / ".github" / "gatekeeper.yml").write_text(
        POLICY + "build: {commands: ['sh build.sh']}\n"
    )
    commit_all(repo, "gate: builds run build.sh")
    git(repo, "checkout", "-q", "builder/add-name")
    git(repo, "rebase", "-q", "main")
    (repo / "build.sh").write_text(BUILD)
    commit_all(repo, "hostile: print what can be found")
    git(repo, "checkout", "-q", "main")
    fake_github.add_repo(REPO, repo)
    fake_github.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
    fake_github.set_permission(REPO, "builder-bot", "write")
    service = make_service(fake_github, store)
    with Running(service) as app:
        answer = app.deliver(
            "pull_request", synchronize(fake_github, 7, fake_github.installation_id)
        )
        run = wait_run(store, answer.json()["run"])
    assert run["decision"] == "reject"
    build = next(c for c in run["verdict"]["criteria"] if c["id"] == "build")
    assert "exited 3" in build["evidence"]
    secrets = [
        CANARY,
        service.settings.webhook_secret.get_secret_value(),
        *fake_github.state.tokens,  # every installation token the fake issued
    ]
    posted = [r.raw_body.decode(errors="replace") for r in fake_github.requests]
    posted.append(json.dumps(run["verdict"]))
    for secret in secrets:
        assert not [body for body in posted if secret in body], "a secret was posted"
    # The clone's config was unreadable to the change, and holds no credential anyway.
    assert "x-access-token" not in build["evidence"]
    assert "Authorization" not in build["evidence"]

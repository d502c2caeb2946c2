"""The fake GitHub behaves like GitHub for the bot's clients: httpx, PyGithub and git.

These tests pin the contract other tests rely on: requests GitHub would refuse are refused
(and recorded), answers carry what PyGithub reads, App authentication works like GitHub's,
and git clones over HTTP need an installation token.
"""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from github import Auth, Github, GithubException, GithubIntegration

from .conftest import BUILDER_BRANCH, commit_all
from .fake import FakeGitHub
from .fake_api import HANDLERS
from .openapi import SpecMissingError, load_spec_document, spec_path

REPO = "octo/demo"


@pytest.fixture
def fake(fake_github: FakeGitHub, demo_git_repo: Path) -> FakeGitHub:
    """The fake with octo/demo registered and pull #1 from the builder branch open."""
    fake_github.add_repo(REPO, demo_git_repo)
    fake_github.add_pull(REPO, 1, base="main", head=BUILDER_BRANCH, user="builder-bot")
    return fake_github


@pytest.fixture
def token(fake: FakeGitHub) -> str:
    return fake.issue_token()


@pytest.fixture
def api(fake: FakeGitHub, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=fake.url, headers=headers, timeout=10) as client:
        yield client


def pygithub(fake: FakeGitHub, token: str) -> Github:
    """PyGithub as the bot would configure it, minus the politeness pauses between writes."""
    return Github(
        auth=Auth.Token(token),
        base_url=fake.url,
        seconds_between_requests=0,
        seconds_between_writes=0,
        lazy=True,
    )


def git_sha(repo: Path, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", ref], capture_output=True, text=True, check=True
    ).stdout.strip()


# -- the description itself -------------------------------------------------------------------


def test_spec_is_found_relative_to_the_repository() -> None:
    assert spec_path().resolve().is_file()
    assert load_spec_document()["openapi"] == "3.0.3"


def test_missing_spec_fails_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(SpecMissingError, match="OpenAPI description is missing"):
        load_spec_document(tmp_path / "nowhere.json")


# -- repositories, contents, refs -------------------------------------------------------------


def test_repository_contents_and_refs(fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path):
    repo = api.get(f"/repos/{REPO}").json()
    assert repo["full_name"] == REPO
    assert repo["default_branch"] == "main"
    assert repo["clone_url"] == f"{fake.url}/{REPO}.git"

    readme = api.get(f"/repos/{REPO}/contents/README.md").json()
    assert readme["type"] == "file" and readme["encoding"] == "base64"
    assert base64.b64decode(readme["content"]) == (demo_git_repo / "README.md").read_bytes()

    # A nested path at another ref: the migration only exists on the builder branch.
    path = f"/repos/{REPO}/contents/db/002_orders_total.sql"
    assert api.get(path).status_code == 404
    migration = api.get(path, params={"ref": BUILDER_BRANCH}).json()
    assert b"ADD COLUMN total" in base64.b64decode(migration["content"])

    listing = api.get(f"/repos/{REPO}/contents/db").json()
    assert [(e["name"], e["type"]) for e in listing] == [("001_init.sql", "file")]

    ref = api.get(f"/repos/{REPO}/git/ref/heads/{BUILDER_BRANCH}").json()
    assert ref["ref"] == f"refs/heads/{BUILDER_BRANCH}"
    assert ref["object"]["sha"] == git_sha(demo_git_repo, BUILDER_BRANCH)
    assert api.get(f"/repos/{REPO}/git/ref/heads/nope").status_code == 404
    assert api.get(f"/repos/{REPO}/git/ref/refs/heads/main").status_code == 404  # as GitHub
    assert fake.calls("repos/get-content")[0].path_params["path"] == "README.md"


def test_pygithub_reads_repository_and_contents(fake: FakeGitHub, token: str):
    repo = pygithub(fake, token).get_repo(REPO)
    assert repo.default_branch == "main"
    content = repo.get_contents("app/main.py", ref=BUILDER_BRANCH)
    assert "def orders" in content.decoded_content.decode()


# -- pull requests ----------------------------------------------------------------------------


def test_pull_request_with_files_commits_and_pull_refs(
    fake: FakeGitHub, token: str, demo_git_repo: Path
):
    pull = pygithub(fake, token).get_repo(REPO).get_pull(1)
    head = git_sha(demo_git_repo, BUILDER_BRANCH)
    assert pull.number == 1 and pull.state == "open"
    assert pull.head.sha == head and pull.head.ref == BUILDER_BRANCH
    assert pull.head.repo.full_name == REPO and pull.base.ref == "main"
    assert pull.user.login == "builder-bot"
    assert pull.mergeable is True
    assert pull.merge_commit_sha == git_sha(demo_git_repo, "refs/pull/1/merge")
    assert git_sha(demo_git_repo, "refs/pull/1/head") == head

    files = {f.filename: f.status for f in pull.get_files()}
    assert files == {
        "app/main.py": "modified",
        "db/002_orders_total.sql": "added",
        "NOTES.txt": "removed",
    }
    assert [c.commit.message for c in pull.get_commits()] == [
        "Add orders endpoint",
        "Add orders.total",
    ]


def test_pull_follows_new_commits_on_its_branch(
    fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path
):
    subprocess.run(["git", "-C", str(demo_git_repo), "checkout", "-q", BUILDER_BRANCH], check=True)
    (demo_git_repo / "app" / "main.py").write_text("def handler():\n    return 'v2'\n")
    new_head = commit_all(demo_git_repo, "Rework", "2024-05-04T12:00:00+00:00")
    assert api.get(f"/repos/{REPO}/pulls/1").json()["head"]["sha"] == new_head
    assert git_sha(demo_git_repo, "refs/pull/1/head") == new_head

    fake.close_pull(REPO, 1, merged=True)
    (demo_git_repo / "app" / "main.py").write_text("def handler():\n    return 'v3'\n")
    commit_all(demo_git_repo, "After the merge", "2024-05-05T12:00:00+00:00")
    closed = api.get(f"/repos/{REPO}/pulls/1").json()
    assert closed["state"] == "closed" and closed["merged"] and closed["merged_at"]
    assert closed["head"]["sha"] == new_head  # a closed pull no longer follows its branch


def test_pull_from_a_fork(fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path, tmp_path: Path):
    fork = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", str(demo_git_repo), str(fork)], check=True)
    subprocess.run(["git", "-C", str(fork), "checkout", "-q", "-b", "fix"], check=True)
    (fork / "README.md").write_text("# demo (fork)\n")
    for key, value in {"user.name": "Forker", "user.email": "f@example.com"}.items():
        subprocess.run(["git", "-C", str(fork), "config", key, value], check=True)
    fork_head = commit_all(fork, "Fork change")
    fake.add_repo("builder/demo", fork, owner_type="User")
    fake.add_pull(REPO, 2, head="fix", head_repo="builder/demo", user="builder")

    pull = api.get(f"/repos/{REPO}/pulls/2").json()
    assert pull["head"]["repo"]["full_name"] == "builder/demo"
    assert pull["head"]["sha"] == fork_head and pull["head"]["label"] == "builder:fix"
    assert git_sha(demo_git_repo, "refs/pull/2/head") == fork_head


def test_collaborator_permission(fake: FakeGitHub, token: str):
    fake.set_permission(REPO, "alice", "maintain")
    repo = pygithub(fake, token).get_repo(REPO)
    assert repo.get_collaborator_permission("alice") == "write"
    assert repo.get_collaborator_permission("mallory") == "read"


# -- commit statuses --------------------------------------------------------------------------


def test_commit_statuses_and_combined_state(
    fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path
):
    sha = git_sha(demo_git_repo, BUILDER_BRANCH)
    for state in ("pending", "success"):
        answer = api.post(
            f"/repos/{REPO}/statuses/{sha}",
            json={"state": state, "context": "gatekeeper", "description": f"gate {state}"},
        )
        assert answer.status_code == 201, answer.text
    api.post(f"/repos/{REPO}/statuses/{sha}", json={"state": "failure", "context": "lint"})

    listed = api.get(f"/repos/{REPO}/commits/{BUILDER_BRANCH}/statuses").json()
    assert [s["state"] for s in listed] == ["failure", "success", "pending"]  # newest first
    combined = api.get(f"/repos/{REPO}/commits/{sha}/status").json()
    assert combined["state"] == "failure" and combined["total_count"] == 2
    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success", "failure"]
    assert fake.bodies("repos/create-commit-status")[0]["context"] == "gatekeeper"


def test_pygithub_creates_a_status(fake: FakeGitHub, token: str, demo_git_repo: Path):
    sha = git_sha(demo_git_repo, BUILDER_BRANCH)
    commit = pygithub(fake, token).get_repo(REPO).get_commit(sha)
    status = commit.create_status("success", description="approved", context="gatekeeper")
    assert status.state == "success" and status.creator.login == "gatekeeper[bot]"
    assert fake.calls("repos/create-commit-status")[0].path_params["sha"] == sha


def test_invalid_status_is_refused_and_recorded(
    fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path
):
    sha = git_sha(demo_git_repo, "main")
    with fake.expect_violation("repos/create-commit-status") as seen:
        answer = api.post(f"/repos/{REPO}/statuses/{sha}", json={"state": "passed"})
    assert answer.status_code == 422
    assert "passed" in answer.json()["message"]
    assert "'passed' is not one of" in str(seen[0])
    assert fake.statuses(REPO, sha) == []

    with fake.expect_violation("repos/create-commit-status"):
        too_long = {"state": "success", "description": "x" * 141}
        assert api.post(f"/repos/{REPO}/statuses/{sha}", json=too_long).status_code == 422
    with fake.expect_violation("repos/create-commit-status"):
        assert api.post(f"/repos/{REPO}/statuses/{sha}", json={}).status_code == 422


# -- check runs -------------------------------------------------------------------------------


def annotations(count: int) -> list[dict]:
    return [
        {
            "path": "app/main.py",
            "start_line": i + 1,
            "end_line": i + 1,
            "annotation_level": "warning",
            "message": f"finding {i}",
        }
        for i in range(count)
    ]


def test_check_run_annotations_limit_and_appending(
    fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path
):
    sha = git_sha(demo_git_repo, BUILDER_BRANCH)
    created = api.post(
        f"/repos/{REPO}/check-runs",
        json={
            "name": "gatekeeper",
            "head_sha": sha,
            "status": "in_progress",
            "output": {"title": "Gate", "summary": "running", "annotations": annotations(50)},
        },
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["output"]["annotations_count"] == 50
    assert run["pull_requests"][0]["number"] == 1

    with fake.expect_violation("checks/update"):
        refused = api.patch(
            f"/repos/{REPO}/check-runs/{run['id']}",
            json={"output": {"summary": "more", "annotations": annotations(51)}},
        )
    assert refused.status_code == 422
    assert "at most 50" in refused.json()["message"]

    updated = api.patch(
        f"/repos/{REPO}/check-runs/{run['id']}",
        json={
            "conclusion": "failure",
            "output": {"title": "Gate", "summary": "done", "annotations": annotations(50)},
        },
    ).json()
    assert updated["status"] == "completed" and updated["completed_at"]
    assert updated["output"]["annotations_count"] == 100  # appended, like GitHub
    assert len(fake.check_run(run["id"]).annotations) == 100

    listed = api.get(f"/repos/{REPO}/commits/{sha}/check-runs").json()
    assert listed["total_count"] == 1 and listed["check_runs"][0]["conclusion"] == "failure"
    assert api.get(f"/repos/{REPO}/check-runs/{run['id']}").json()["id"] == run["id"]


@pytest.mark.allow_github_violations
def test_check_run_limits_without_expect_violation(
    fake: FakeGitHub, api: httpx.Client, demo_git_repo: Path
):
    """The marker switches the fixture's final check off; the records are still there."""
    sha = git_sha(demo_git_repo, "main")
    over = api.post(
        f"/repos/{REPO}/check-runs",
        json={
            "name": "gate",
            "head_sha": sha,
            "output": {"title": "t", "summary": "s", "annotations": annotations(51)},
        },
    )
    assert over.status_code == 422
    # 40,000 characters but 80,000 bytes of UTF-8: GitHub counts bytes.
    wide = api.post(
        f"/repos/{REPO}/check-runs",
        json={"name": "gate", "head_sha": sha, "output": {"title": "t", "summary": "é" * 40000}},
    )
    assert wide.status_code == 422
    completed_without_conclusion = api.post(
        f"/repos/{REPO}/check-runs", json={"name": "gate", "head_sha": sha, "status": "completed"}
    )
    assert completed_without_conclusion.status_code == 422
    assert [v.operation_id for v in fake.violations] == ["checks/create"] * 3
    assert fake.check_runs(REPO) == []


def test_pygithub_check_run(fake: FakeGitHub, token: str, demo_git_repo: Path):
    repo = pygithub(fake, token).get_repo(REPO)
    run = repo.create_check_run(
        name="gatekeeper",
        head_sha=git_sha(demo_git_repo, BUILDER_BRANCH),
        status="in_progress",
        output={"title": "Gate", "summary": "running"},
    )
    run.edit(conclusion="success", output={"title": "Gate", "summary": "all good"})
    again = repo.get_check_run(run.id)
    assert again.conclusion == "success" and again.output.summary == "all good"
    assert again.app.slug == "gatekeeper"


# -- comments, labels, reviews ----------------------------------------------------------------


def test_comments_are_paginated_with_link_headers(fake: FakeGitHub, api: httpx.Client, token: str):
    for i in range(5):
        answer = api.post(f"/repos/{REPO}/issues/1/comments", json={"body": f"comment {i}"})
        assert answer.status_code == 201
    first = api.get(f"/repos/{REPO}/issues/1/comments", params={"per_page": 2})
    assert [c["body"] for c in first.json()] == ["comment 0", "comment 1"]
    assert 'rel="next"' in first.headers["link"] and 'rel="last"' in first.headers["link"]
    bodies = []
    page: httpx.Response | None = first
    while page is not None:
        bodies += [c["body"] for c in page.json()]
        page = api.get(page.links["next"]["url"]) if "next" in page.links else None
    assert bodies == [f"comment {i}" for i in range(5)]

    comment_id = first.json()[0]["id"]
    edited = api.patch(f"/repos/{REPO}/issues/comments/{comment_id}", json={"body": "edited"})
    assert edited.json()["body"] == "edited"

    # PyGithub follows the Link header on its own.
    pull = pygithub(fake, token).get_repo(REPO).get_pull(1)
    assert [c.body for c in pull.get_issue_comments()][:2] == ["edited", "comment 1"]
    created = pull.create_issue_comment("from PyGithub")
    assert created.user.login == "gatekeeper[bot]"
    assert fake.comments(REPO, 1)[-1]["body"] == "from PyGithub"


def test_comment_body_limit(fake: FakeGitHub, api: httpx.Client):
    assert api.post(f"/repos/{REPO}/issues/1/comments", json={"body": "x" * 65536}).is_success
    with fake.expect_violation("issues/create-comment"):
        answer = api.post(f"/repos/{REPO}/issues/1/comments", json={"body": "x" * 65537})
    assert answer.status_code == 422
    assert api.post(f"/repos/{REPO}/issues/99/comments", json={"body": "hi"}).status_code == 404


def test_labels(fake: FakeGitHub, api: httpx.Client, token: str):
    created = api.post(f"/repos/{REPO}/labels", json={"name": "gate:approved", "color": "0e8a16"})
    assert created.status_code == 201
    again = api.post(f"/repos/{REPO}/labels", json={"name": "gate:approved"})
    assert again.status_code == 422 and again.json()["errors"][0]["code"] == "already_exists"

    added = api.post(f"/repos/{REPO}/issues/1/labels", json={"labels": ["gate:approved", "risk"]})
    assert [label["name"] for label in added.json()] == ["gate:approved", "risk"]
    removed = api.delete(f"/repos/{REPO}/issues/1/labels/risk")
    assert [label["name"] for label in removed.json()] == ["gate:approved"]
    assert api.delete(f"/repos/{REPO}/issues/1/labels/risk").status_code == 404
    assert fake.labels(REPO, 1) == ["gate:approved"]

    # PyGithub's Issue.add_to_labels posts a bare JSON array, a form this description of the
    # endpoint does not list (only {"labels": [...]}): the fake refuses it.
    pull = pygithub(fake, token).get_repo(REPO).get_pull(1)
    with fake.expect_violation("issues/add-labels"), pytest.raises(GithubException):
        pull.add_to_labels("risk")
    with fake.expect_violation("issues/create-label"):
        assert (
            api.post(f"/repos/{REPO}/labels", json={"name": "x", "color": "#fff"}).status_code
            == 422
        )


def test_reviews(fake: FakeGitHub, api: httpx.Client, token: str, demo_git_repo: Path):
    pull = pygithub(fake, token).get_repo(REPO).get_pull(1)
    review = pull.create_review(body="Risk is low.", event="APPROVE")
    assert review.state == "APPROVED"
    assert review.commit_id == git_sha(demo_git_repo, BUILDER_BRANCH)
    assert [r.state for r in pull.get_reviews()] == ["APPROVED"]
    dismissed = api.put(
        f"/repos/{REPO}/pulls/1/reviews/{review.id}/dismissals",
        json={"message": "new commits", "event": "DISMISS"},
    )
    assert dismissed.json()["state"] == "DISMISSED"
    with fake.expect_violation("pulls/create-review"):
        refused = api.post(f"/repos/{REPO}/pulls/1/reviews", json={"event": "REQUEST_CHANGES"})
    assert refused.status_code == 422


# -- GitHub App authentication ----------------------------------------------------------------


def test_app_jwt_to_installation_token_to_repository(fake: FakeGitHub):
    with httpx.Client(base_url=fake.url, timeout=10) as client:
        as_app = {"Authorization": f"Bearer {fake.app_jwt()}"}
        app = client.get("/app", headers=as_app)
        assert app.status_code == 200 and app.json()["id"] == fake.app_id
        installation = client.get(f"/repos/{REPO}/installation", headers=as_app).json()
        assert installation["id"] == fake.installation_id
        issued = client.post(
            f"/app/installations/{installation['id']}/access_tokens", headers=as_app, json={}
        )
        assert issued.status_code == 201
        token = issued.json()["token"]
        assert token.startswith("ghs_") and issued.json()["expires_at"].endswith("Z")
        repo = client.get(f"/repos/{REPO}", headers={"Authorization": f"token {token}"})
        assert repo.status_code == 200
        # The App's JWT is not a token for repository endpoints, and vice versa.
        assert client.get(f"/repos/{REPO}", headers=as_app).status_code == 401
        assert client.get("/app", headers={"Authorization": f"token {token}"}).status_code == 401
    assert fake.tokens_issued == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expires_in": 700}, "too far in the future"),
        ({"issued_at_offset": 120, "expires_in": 300}, "time in the past"),
        ({"issued_at_offset": -700, "expires_in": 600}, "future time"),
        ({"issuer": "999"}, "Issuer"),
    ],
)
def test_bad_app_jwts_are_refused(fake: FakeGitHub, kwargs: dict, message: str):
    headers = {"Authorization": f"Bearer {fake.app_jwt(**kwargs)}"}
    answer = httpx.get(f"{fake.url}/app", headers=headers)
    assert answer.status_code == 401 and message in answer.json()["message"]


def test_jwt_signed_by_another_key_is_refused(fake: FakeGitHub):
    other = FakeGitHub()  # a different key pair; never started
    try:
        forged = fake.app_jwt(private_key=other.app_private_key)
    finally:
        other.stop()
    answer = httpx.get(f"{fake.url}/app", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401


def test_pygithub_app_auth_and_token_refresh(fake: FakeGitHub):
    integration = GithubIntegration(
        auth=Auth.AppAuth(fake.app_id, fake.app_private_key), base_url=fake.url
    )
    assert integration.get_app().slug == "gatekeeper"
    installation = integration.get_repo_installation("octo", "demo")
    assert installation.id == fake.installation_id
    token = integration.get_access_token(installation.id)
    assert token.token.startswith("ghs_")
    repo = Github(auth=Auth.Token(token.token), base_url=fake.url).get_repo(REPO)
    assert repo.full_name == REPO

    # Tokens living less than PyGithub's 20 s refresh margin are renewed before every call.
    fake.token_lifetime = 5
    issued = fake.tokens_issued
    gh = Github(
        auth=Auth.AppAuth(fake.app_id, fake.app_private_key).get_installation_auth(installation.id),
        base_url=fake.url,
    )
    gh.get_repo(REPO)
    gh.get_repo(REPO)
    assert fake.tokens_issued == issued + 2


def test_expired_unknown_and_missing_tokens_get_401(fake: FakeGitHub, api: httpx.Client):
    assert api.get(f"/repos/{REPO}").status_code == 200
    fake.expire_tokens()
    expired = api.get(f"/repos/{REPO}")
    assert expired.status_code == 401 and expired.json()["message"] == "Bad credentials"
    unknown = httpx.get(f"{fake.url}/repos/{REPO}", headers={"Authorization": "token ghs_nope"})
    assert unknown.status_code == 401
    assert httpx.get(f"{fake.url}/repos/{REPO}").status_code == 401


def test_token_of_another_installation_does_not_see_the_repository(fake: FakeGitHub):
    fake.add_installation(888, "someone-else")
    other = fake.issue_token(888)
    answer = httpx.get(f"{fake.url}/repos/{REPO}", headers={"Authorization": f"token {other}"})
    assert answer.status_code == 404


# -- git over HTTP ----------------------------------------------------------------------------


def run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60
    )


def test_git_clone_over_http_needs_a_token(
    fake: FakeGitHub, token: str, tmp_path: Path, demo_git_repo: Path
):
    denied = run_git("clone", "-q", fake.clone_url(REPO), str(tmp_path / "anonymous"))
    assert denied.returncode != 0
    assert any(r.status == 401 for r in fake.requests if r.operation_id == "git:info/refs")

    cloned = run_git("clone", "-q", fake.clone_url(REPO, token), str(tmp_path / "clone"))
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "clone" / "README.md").read_text() == "# demo\n\nA tiny service.\n"

    refs = run_git("ls-remote", fake.clone_url(REPO, token)).stdout
    assert f"{git_sha(demo_git_repo, BUILDER_BRANCH)}\trefs/pull/1/head" in refs
    assert "refs/pull/1/merge" in refs
    fetched = run_git("fetch", "-q", "origin", "refs/pull/1/head", cwd=tmp_path / "clone")
    assert fetched.returncode == 0, fetched.stderr

    fake.expire_tokens()
    expired = run_git("clone", "-q", fake.clone_url(REPO, token), str(tmp_path / "late"))
    assert expired.returncode != 0


def test_tarball_redirects_to_an_archive(fake: FakeGitHub, api: httpx.Client):
    redirect = api.get(f"/repos/{REPO}/tarball/main")
    assert redirect.status_code == 302
    archive = httpx.get(redirect.headers["location"])
    with tarfile.open(fileobj=BytesIO(gzip.decompress(archive.content))) as tar:
        names = tar.getnames()
    assert any(name.endswith("/README.md") for name in names)


def test_compare(fake: FakeGitHub, api: httpx.Client):
    compared = api.get(f"/repos/{REPO}/compare/main...{BUILDER_BRANCH}").json()
    assert compared["status"] == "ahead" and compared["ahead_by"] == 2
    assert {f["filename"] for f in compared["files"]} >= {"db/002_orders_total.sql"}


# -- validation of what is sent ---------------------------------------------------------------


def test_unknown_operations_and_bad_parameters_are_violations(fake: FakeGitHub, api: httpx.Client):
    with fake.expect_violation(None) as seen:
        assert api.get(f"/repos/{REPO}/branches").status_code == 404  # not in the subset
    assert "no operation" in str(seen[0])
    with fake.expect_violation(None) as seen:
        assert api.delete(f"/repos/{REPO}").status_code == 404
    assert "DELETE is not an operation" in str(seen[0])
    with fake.expect_violation("checks/get"):
        assert api.get(f"/repos/{REPO}/check-runs/abc").status_code == 422
    with fake.expect_violation("issues/list-comments"):
        assert api.get(f"/repos/{REPO}/issues/1/comments?per_page=many").status_code == 422
    with fake.expect_violation("issues/create-comment"):
        answer = api.post(
            f"/repos/{REPO}/issues/1/comments",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 400


def test_an_operation_of_the_spec_the_fake_cannot_answer_is_a_violation_not_a_crash(
    fake: FakeGitHub, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delitem(HANDLERS, "repos/get")
    with fake.expect_violation("repos/get") as seen:
        answer = api.get(f"/repos/{REPO}")
    assert answer.status_code == 501
    assert "no handler" in str(seen[0])


# -- signing in with GitHub: the App's OAuth and the user's installations ----------------------

CALLBACK = "http://gatekeeper.test/login/callback"


def _authorize(
    fake: FakeGitHub, state: str = "s-1", redirect_uri: str = CALLBACK
) -> httpx.Response:
    query = {"client_id": fake.oauth_client_id, "redirect_uri": redirect_uri, "state": state}
    return httpx.get(f"{fake.url}/login/oauth/authorize", params=query, timeout=10)


def _exchange(fake: FakeGitHub, code: str, **overrides: str) -> dict:
    form = {
        "client_id": fake.oauth_client_id,
        "client_secret": fake.oauth_client_secret,
        "code": code,
        "redirect_uri": CALLBACK,
        **overrides,
    }
    answer = httpx.post(
        f"{fake.url}/login/oauth/access_token",
        data=form,
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200  # GitHub's refusals are 200s too
    return answer.json()


def test_oauth_web_flow_and_the_users_installations(fake: FakeGitHub, demo_git_repo: Path):
    fake.add_repo("octo/secret", demo_git_repo)
    fake.add_installation(888, "other")
    fake.add_repo("other/tool", demo_git_repo, installation_id=888)
    fake.set_permission(REPO, "alice", "read")
    fake.set_permission("octo/secret", "alice", "none")
    fake.set_oauth_callback("http://gatekeeper.test/login")
    fake.sign_in_as("alice")

    redirect = _authorize(fake, state="s-1")
    assert redirect.status_code == 302
    back = urlsplit(redirect.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    query = dict(parse_qsl(back.query))
    assert query["state"] == "s-1" and query["code"]
    token = _exchange(fake, query["code"])
    assert token["access_token"].startswith("ghu_") and token["expires_in"] == 8 * 3600
    assert _exchange(fake, query["code"])["error"] == "bad_verification_code"  # single use

    user = {"Authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=fake.url, headers=user, timeout=10) as api:
        assert api.get("/user").json()["login"] == "alice"
        installations = api.get("/user/installations").json()
        assert [i["id"] for i in installations["installations"]] == [fake.installation_id]
        repos = api.get(f"/user/installations/{fake.installation_id}/repositories").json()
        assert [r["full_name"] for r in repos["repositories"]] == [REPO]
        assert repos["repositories"][0]["permissions"]["pull"] is True
        assert repos["repositories"][0]["permissions"]["push"] is False
        assert api.get("/user/installations/888/repositories").status_code == 404
        # A user token is not an installation token, and the other way round.
        assert api.get(f"/repos/{REPO}").status_code == 403
    installation = {"Authorization": f"token {fake.issue_token()}"}
    assert httpx.get(f"{fake.url}/user", headers=installation).status_code == 403
    fake.revoke_user_tokens("alice")
    assert httpx.get(f"{fake.url}/user", headers=user).status_code == 401
    assert fake.violations == [] and fake.response_violations == []


def test_oauth_refusals_are_githubs(fake: FakeGitHub):
    fake.set_oauth_callback(CALLBACK)
    fake.sign_in_as("alice")
    code = dict(parse_qsl(urlsplit(_authorize(fake).headers["location"]).query))["code"]
    assert _exchange(fake, code, client_secret="wrong")["error"] == "incorrect_client_credentials"
    code = dict(parse_qsl(urlsplit(_authorize(fake).headers["location"]).query))["code"]
    other = "http://gatekeeper.test/login/callback/elsewhere"
    assert _exchange(fake, code, redirect_uri=other)["error"] == "redirect_uri_mismatch"
    with fake.expect_violation("oauth:authorize"):
        assert _authorize(fake, redirect_uri="http://evil.test/login/callback").status_code == 400
    fake.sign_in_as("alice", approve=False)
    denied = dict(parse_qsl(urlsplit(_authorize(fake, state="s-2").headers["location"]).query))
    assert denied == {
        "error": "access_denied",
        "error_description": "The user has denied your application access.",
        "state": "s-2",
    }
    fake.sign_in_as(None)
    assert _authorize(fake).status_code == 401


# -- failure injection and rate limits --------------------------------------------------------


def test_fail_next_then_success(fake: FakeGitHub, api: httpx.Client, token: str):
    fake.fail_next("repos/get", status=502)
    assert api.get(f"/repos/{REPO}").status_code == 502
    assert api.get(f"/repos/{REPO}").status_code == 200
    # PyGithub retries 5xx on GETs by itself.
    fake.fail_next("repos/get", status=502)
    gh = Github(auth=Auth.Token(token), base_url=fake.url, seconds_between_requests=0)
    assert gh.get_repo(REPO).full_name == REPO
    assert [r.status for r in fake.calls("repos/get")] == [502, 200, 502, 200]


def test_secondary_rate_limit(fake: FakeGitHub, api: httpx.Client, token: str):
    fake.rate_limit_next("repos/get", retry_after=1)
    limited = api.get(f"/repos/{REPO}")
    assert limited.status_code == 403 and limited.headers["retry-after"] == "1"
    assert "secondary rate limit" in limited.json()["message"]
    assert api.get(f"/repos/{REPO}").status_code == 200

    fake.rate_limit_next("repos/get", retry_after=1, status=429)
    started = time.monotonic()
    gh = Github(auth=Auth.Token(token), base_url=fake.url)
    assert gh.get_repo(REPO).full_name == REPO  # PyGithub waits Retry-After, then retries
    assert time.monotonic() - started >= 1


def test_primary_rate_limit_and_headers(fake: FakeGitHub, api: httpx.Client):
    answer = api.get(f"/repos/{REPO}")
    for header in (
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
    ):
        assert header in answer.headers
    used = int(answer.headers["x-ratelimit-used"])
    assert int(api.get(f"/repos/{REPO}").headers["x-ratelimit-used"]) == used + 1
    limits = api.get("/rate_limit").json()
    assert limits["resources"]["core"]["used"] == used + 1

    fake.rate_limit_next("repos/get", secondary=False, retry_after=30)
    limited = api.get(f"/repos/{REPO}")
    assert limited.status_code == 403 and limited.headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in limited.headers

    fake.set_rate_remaining(0)
    exhausted = api.get(f"/repos/{REPO}")
    assert exhausted.status_code == 403 and "rate limit exceeded" in exhausted.json()["message"]


def test_delay(fake: FakeGitHub, api: httpx.Client):
    fake.delay("repos/get", 0.3, times=1)
    started = time.monotonic()
    assert api.get(f"/repos/{REPO}").status_code == 200
    assert time.monotonic() - started >= 0.3


# -- webhook deliveries and workflows ---------------------------------------------------------


def test_webhook_deliveries_and_redelivery(fake: FakeGitHub):
    ok = fake.add_delivery(event="pull_request", action="opened", status_code=200)
    failed = [
        fake.add_delivery(event="pull_request", action="synchronize", status_code=502)
        for _ in range(3)
    ]
    as_app = {"Authorization": f"Bearer {fake.app_jwt()}"}
    with httpx.Client(base_url=fake.url, headers=as_app, timeout=10) as client:
        listed = client.get("/app/hook/deliveries", params={"per_page": 2})
        assert [d["id"] for d in listed.json()] == [failed[2].id, failed[1].id]
        following = client.get(listed.links["next"]["url"]).json()
        assert [d["id"] for d in following] == [failed[0].id, ok.id]
        failures = client.get("/app/hook/deliveries", params={"status": "failure"}).json()
        assert {d["status_code"] for d in failures} == {502}
        item = failures[0]
        assert {"guid", "delivered_at", "redelivery", "event", "action"} <= set(item)

        attempt = client.post(f"/app/hook/deliveries/{failed[0].id}/attempts")
        assert attempt.status_code == 202
        assert fake.redelivery_attempts == [failed[0].id]
        newest = client.get("/app/hook/deliveries", params={"per_page": 1}).json()[0]
        assert newest["redelivery"] is True and newest["guid"] == failed[0].guid
        assert client.get("/app/hook/deliveries/1").status_code == 404
        token = fake.issue_token()
        as_installation = {"Authorization": f"token {token}"}
        assert client.get("/app/hook/deliveries", headers=as_installation).status_code == 401


def test_workflow_dispatch_and_runs(fake: FakeGitHub, api: httpx.Client):
    dispatched = api.post(
        f"/repos/{REPO}/actions/workflows/gate.yml/dispatches",
        json={"ref": "main", "inputs": {"pull": "1"}},
    )
    assert dispatched.status_code == 204
    assert fake.bodies("actions/create-workflow-dispatch") == [
        {"ref": "main", "inputs": {"pull": "1"}}
    ]
    [run] = fake.workflow_runs(REPO)
    fake.set_workflow_run(run.id, conclusion="success")
    fetched = api.get(f"/repos/{REPO}/actions/runs/{run.id}").json()
    assert fetched["status"] == "completed" and fetched["conclusion"] == "success"
    assert (
        api.post(
            f"/repos/{REPO}/actions/workflows/gate.yml/dispatches", json={"ref": "nope"}
        ).status_code
        == 422
    )
    details = api.post(
        f"/repos/{REPO}/actions/workflows/gate.yml/dispatches",
        json={"ref": "main", "return_run_details": True},
    ).json()
    assert api.get(f"/repos/{REPO}/actions/runs/{details['workflow_run_id']}").is_success

"""Hostile branches through `gatekeeper validate`: the change's code must not walk out with
the gate's secrets, read the host, steer the database as a superuser, or outlive the run.

Each case plants canaries in Gatekeeper's own environment (a setting, a token, a secret the
operator did not pass, one the operator passed on purpose), runs a branch that tries to leak
them, and greps every output: stdout, stderr, report.md and verdict.json.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bot.engine.job import Job
from bot.engine.pipeline import Cancelled, validate
from bot.gitrepo import resolve
from bot.policy.loader import policy_at
from bot.sandbox import confine
from bot.sandbox.select import factory
from tests.helpers import commit, git, items_repo, running_with

GATEKEEPER = [sys.executable, "-m", "bot"]
CANARIES = {
    "GATEKEEPER_WEBHOOK_SECRET": "canary-webhook-7f3a9c21d4",
    "GITHUB_TOKEN": "ghs_canarytoken0123456789abcdef",
    "MY_DEPLOY_SECRET": "canary-deploy-5be0e1a7c9",
    "PASSED_SECRET": "canary-passed-e83b19f4a2",  # passed to the API on purpose: masked
}
POLICY = """\
version: 1
migrations: {mode: directory, directory: migrations}
timeouts: {lock_timeout: 1s, statement_timeout: 20s, run: 60}
suites: [../checks]
"""
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the run account needs root")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return items_repo(tmp_path, POLICY)


BUILD = "build: {commands: ['sh build.sh']}\n"


def _hostile(repo: Path, name: str, files: dict[str, str], policy: str = "") -> None:
    """A builder branch; `policy` extends the base's policy (on main: the gate reads it
    from the base branch, never from the change). A hostile `build.sh` is the change's: main
    builds with a harmless one (both sides are built)."""
    if policy:
        main = {".github/gatekeeper.yml": POLICY + policy}
        if "build.sh" in files:
            main["build.sh"] = "true\n"
        commit(repo, main, f"policy for {name}")
    git(repo, "checkout", "-qb", name, "main")
    commit(repo, files, f"hostile: {name}")
    git(repo, "checkout", "-q", "main")


def _validate(repo: Path, head: str, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, **CANARIES, "GATEKEEPER_PASS_ENV": "PASSED_SECRET"}
    started = time.monotonic()
    proc = subprocess.run(
        [*GATEKEEPER, "validate", "--repo", str(repo), "--head", head, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert time.monotonic() - started < 60 + 10, "the run outlived timeouts.run + 10 s"
    assert (out / "verdict.json").exists(), proc.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    outputs = proc.stdout + proc.stderr + (out / "report.md").read_text() + json.dumps(verdict)
    for name, value in CANARIES.items():
        encoded = base64.b64encode(value.encode()).decode()
        assert value not in outputs, f"{name} leaked"
        assert encoded[:-4] not in outputs, f"{name} leaked base64-encoded"
    return proc, verdict


def _criterion(verdict: dict, cid: str) -> dict:
    return next(c for c in verdict["criteria"] if c["id"] == cid)


def test_a_build_that_prints_its_environment_leaks_nothing(repo, tmp_path):
    policy = "api:\n  command: 'true'\n  env: {API_SECRET: '${PASSED_SECRET}'}\n"
    script = "env; echo $API_SECRET | base64; cat /proc/1/environ; exit 3\n"
    _hostile(repo, "builder/env", {"build.sh": script}, policy + BUILD)
    proc, verdict = _validate(repo, "builder/env", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    build = _criterion(verdict, "build")
    assert build["status"] == "failed" and "exited 3" in build["evidence"]
    # The passed secret reached the build (the operator passed it), masked in every output.
    assert "API_SECRET=***" in build["evidence"]
    # The environment was constructed: no variable of Gatekeeper's own process is there.
    assert "MY_DEPLOY_SECRET" not in build["evidence"]
    assert "GITHUB_TOKEN" not in build["evidence"]


def test_a_migration_cannot_run_programs_or_read_host_files(repo, tmp_path):
    for name, sql in {
        "program": "COPY (SELECT 1) TO PROGRAM 'env > /tmp/gatekeeper-leak';",
        "file": "SELECT pg_read_file('/etc/passwd');",
        "superuser": "ALTER ROLE CURRENT_USER SUPERUSER;",
    }.items():
        _hostile(repo, f"builder/{name}", {"migrations/002_leak.sql": sql + "\n"})
        proc, verdict = _validate(repo, f"builder/{name}", tmp_path / name)
        assert proc.returncode == 1, proc.stderr
        apply = _criterion(verdict, "migrate.apply")
        assert apply["status"] == "failed"
        assert "permission denied" in apply["evidence"] or "must be" in apply["evidence"]
        assert "root:x:0:0" not in json.dumps(verdict)
    assert not Path("/tmp/gatekeeper-leak").exists()


def test_a_migration_that_loops_ends_with_the_run(repo, tmp_path):
    """statement_timeout turned off by the migration itself: the run's deadline ends it."""
    commit(repo, {".github/gatekeeper.yml": POLICY.replace("run: 60", "run: 8")}, "short run")
    sql = "SET statement_timeout = 0;\nSELECT pg_sleep(600);\n"
    _hostile(repo, "builder/loop", {"migrations/002_loop.sql": sql})
    started = time.monotonic()
    proc, verdict = _validate(repo, "builder/loop", tmp_path / "out")
    assert time.monotonic() - started < 8 + 10
    assert proc.returncode in (1, 2), proc.stderr
    assert verdict["decision"] in ("reject", "error")


@ROOT_ONLY
def test_the_change_runs_unprivileged_and_nothing_it_starts_outlives_the_run(repo, tmp_path):
    """A build that forks a daemon (setsid, double fork) and tries the gate's own files and
    the superuser's socket: it runs as the run account, and its daemon dies with the run."""
    marker = f"gk-daemon-{os.getpid()}"
    script = f"""\
        #!/bin/sh
        cp /bin/sleep "$TMPDIR/{marker}"
        (setsid "$TMPDIR/{marker}" 300 &) &
        sleep 0.3
        found=$(grep -l "[{marker[0]}]{marker[1:]}" /proc/[0-9]*/cmdline 2>/dev/null)
        echo "daemons=$(echo "$found" | grep -c .)"
        cat /root/.bashrc /var/lib/gatekeeper/app.pem 2>&1 | head -3
        for d in /tmp/gatekeeper-*/socket; do
          psql -h "$d" -U postgres -c 'select 1' 2>&1 | head -1
        done
        echo "uid=$(id -u)"
        exit 3
        """
    _hostile(repo, "builder/daemon", {"build.sh": script}, BUILD)
    _proc, verdict = _validate(repo, "builder/daemon", tmp_path / "out")
    evidence = _criterion(verdict, "build")["evidence"]
    assert "uid=0" not in evidence and "uid=" in evidence
    assert "daemons=0" not in evidence and "daemons=" in evidence  # it did start one
    assert "isolated: account gatekeeper-run" in verdict["evidence"]["isolation"]
    time.sleep(0.5)
    left = running_with(marker)
    assert left == [], f"processes outlived the run: {left}"


def test_a_cancelled_run_stops_a_stage_that_hangs(repo, tmp_path):
    """A newer commit or the watchdog cancels the run while a build hangs: the stage is
    pre-empted within seconds, not when the build's own timeout ends, and nothing is left."""

    marker = f"gk-hang-{os.getpid()}"
    command = f'cp /bin/sleep "$TMPDIR/{marker}" && "$TMPDIR/{marker}" 300'
    policy = f"build: {{commands: ['{command}'], timeout: 600}}\n"
    _hostile(repo, "builder/hang", {"README": "x\n"}, policy)
    base, head = resolve(repo, "main"), resolve(repo, "builder/hang")
    job = Job(
        repository="r", base_ref="main", head_ref="builder/hang", base_sha=base, head_sha=head
    )
    seen: list[int] = []

    def cancelled() -> bool:
        """Once the build's process runs: a cancel must find something to stop."""
        seen.extend(running_with(marker))
        return bool(seen)

    with policy_at(repo, base) as loaded, pytest.raises(Cancelled):
        started = time.monotonic()
        validate(job, repo, loaded, factory(), cancelled=cancelled)
    assert seen and time.monotonic() - started < 30
    assert running_with(marker) == []


# Connects only inside the namespace, where no packet can leave: this machine's tests send
# nothing to any address but loopback.
PROBE = """\
import socket, sys
print("interfaces=" + ",".join(name for _, name in socket.if_nameindex()))
if sys.argv[1:] == ["connect"]:
    print("metadata=", socket.socket().connect_ex(("169.254.169.254", 80)))
"""


@ROOT_ONLY
def test_the_change_reaches_no_address_but_its_sandbox(repo, tmp_path):
    """Loopback only, unless the policy gives the build the network: the metadata address is
    unreachable at once (no packet leaves: there is no route)."""
    build = "build: {%scommands: ['sh build.sh %s']}\n"
    script = 'python3 probe.py "$@"; exit 3\n'
    _hostile(repo, "builder/net", {"probe.py": PROBE, "build.sh": script}, build % ("", "connect"))
    _proc, verdict = _validate(repo, "builder/net", tmp_path / "out")
    evidence = _criterion(verdict, "build")["evidence"]
    assert "interfaces=lo\n" in evidence
    assert "metadata= 101" in evidence  # ENETUNREACH
    assert "network namespaces (loopback only" in verdict["evidence"]["isolation"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "The change's code ran isolated: account gatekeeper-run-" in report
    # The policy's switch for builds that install dependencies: the host's interfaces.
    commit(repo, {".github/gatekeeper.yml": POLICY + build % ("network: true, ", "")}, "net")
    _proc, verdict = _validate(repo, "builder/net", tmp_path / "open")
    interfaces = _criterion(verdict, "build")["evidence"].split("interfaces=", 1)[1]
    assert interfaces.split("\n")[0].startswith("lo,")  # loopback and the host's others


@ROOT_ONLY
def test_a_migration_command_is_confined_without_an_api_too(repo, tmp_path):
    """`migrations.mode: command` with no `api:`: the command still runs as the run's account,
    in the run's network namespace (where the sandbox's database listens)."""
    command = "echo uid=$(id -u) done; exit 3"
    policy = POLICY.replace(
        "{mode: directory, directory: migrations}", f'{{mode: command, command: "{command}"}}'
    )
    commit(repo, {".github/gatekeeper.yml": policy}, "command migrations")
    _hostile(repo, "builder/cmd", {"README": "x\n"})
    proc, verdict = _validate(repo, "builder/cmd", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr  # the base's migrations fail: no baseline
    said = json.dumps(verdict)
    assert "uid=" in said and "uid=0 done" not in said


@ROOT_ONLY
def test_a_daemon_the_api_forks_dies_with_the_run(repo, tmp_path):
    """The API under test double-forks a daemon at start-up; the run approves, and nothing
    of it is left afterwards."""
    marker = f"gk-api-daemon-{os.getpid()}"
    start = (
        f'cp /bin/sleep "$TMPDIR/{marker}" && (setsid "$TMPDIR/{marker}" 300 &) && '
        "exec python3 -m http.server $PORT --bind 127.0.0.1"
    )
    policy = f"api: {{command: '{start}', health_path: /}}\n"
    _hostile(repo, "builder/api-daemon", {"README": "x\n"}, policy)
    proc, verdict = _validate(repo, "builder/api-daemon", tmp_path / "out")
    assert proc.returncode == 0, verdict["summary"]
    time.sleep(0.5)
    assert running_with(marker) == []


@ROOT_ONLY
def test_the_change_leaves_no_file_outside_its_scratch_dir(repo, tmp_path):
    """World-writable places are its own in its mount namespace: what it writes there goes
    with it, and it reads nothing another run left there."""
    marker = f"gk-outside-{os.getpid()}"
    places = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]
    (places[0] / f"{marker}-planted").write_text("another run's file")
    writes = "; ".join(f"echo x > {place}/{marker}" for place in places)
    command = f"{writes}; ls /tmp; cat /tmp/{marker}-planted; exit 3"
    _hostile(repo, "builder/outside", {"build.sh": command + "\n"}, BUILD)
    try:
        _proc, verdict = _validate(repo, "builder/outside", tmp_path / "out")
        evidence = _criterion(verdict, "build")["evidence"]
        assert "another run's file" not in evidence and "exited 3" in evidence
        assert f"\n{marker}\n" in f"\n{evidence}\n"  # written, inside: `ls /tmp` lists it
        assert [p for p in places if (p / marker).exists()] == []
    finally:
        (places[0] / f"{marker}-planted").unlink()


@ROOT_ONLY
def test_the_sweep_kills_what_a_dead_run_left_and_spares_live_runs(tmp_path):
    """A gate SIGKILLed mid-run leaves its account's processes; the next run's sweep kills
    every process of a slot nobody holds, and none of a slot a live run holds."""
    (tmp_path / "live").mkdir()
    (tmp_path / "dead").mkdir()
    marker = f"gk-sweep-{os.getpid()}"
    # Where the run accounts can run it: pytest's tmp_path sits under a 0700 directory.
    shared = Path(tempfile.mkdtemp(prefix="gk-sweep-"))
    shared.chmod(0o755)
    sleeper = shared / marker
    shutil.copy("/bin/sleep", sleeper)
    sleeper.chmod(0o755)
    with confine.prepare(tmp_path / "live") as live:
        with confine.prepare(tmp_path / "dead") as dead:
            assert live.run_as and dead.run_as and live.run_as.uid != dead.run_as.uid
        started = []
        for account in (live.run_as, dead.run_as):
            started.append(
                subprocess.Popen(
                    [
                        "setpriv",
                        f"--reuid={account.uid}",
                        f"--regid={account.gid}",
                        "--clear-groups",
                        str(sleeper),
                        "300",
                    ],
                    start_new_session=True,
                )
            )
        try:
            deadline = time.monotonic() + 10
            while len(running_with(marker)) < 2:  # both run as their accounts
                assert time.monotonic() < deadline, "the leftovers never started"
                time.sleep(0.05)
            assert confine.sweep() >= 1
            assert started[1].wait(timeout=10) == -signal.SIGKILL  # the dead run's
            assert started[0].poll() is None  # the live run's, untouched
        finally:
            for process in started:
                process.kill()
                process.wait()
            shutil.rmtree(shared)

"""ContainersSandbox against a real engine, real images and real HTTP: nothing here is mocked.

Needs a running Docker engine with the local images of examples/containers/prepare.sh
(`.ci/run` prepares them); without one, every test that needs it is skipped with the reason,
and the tests of what happens *without* an engine still run. After every test nothing labelled
with its run id may be left: no container, no network, no volume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from bot.policy.model import ContainerHealth, ContainerLimits, Containers, ContainerService
from bot.sandbox import images, netns
from bot.sandbox.base import (
    ApiSpec,
    ApiStartError,
    BuildFailed,
    DatabaseStartError,
    EngineUnavailable,
    SandboxError,
)
from bot.sandbox.containers import ContainersSandbox, creator_alive, remove_run, sweep
from bot.sandbox.images import LABEL_CREATED, LABEL_HOST, LABEL_PID, LABEL_RUN
from tests.helpers import interrupt_after, reaped

POSTGRES_IMAGE = "gatekeeper/postgres:15"
PYTHON_IMAGE = "gatekeeper/python:3.11"


ENGINE_PROBLEM = images.engine_problem(images.LOCAL_IMAGES)
needs_engine = pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=str(ENGINE_PROBLEM))


def _open_network() -> str:
    """The mode that leaves the network open on this engine: port mapping where it has a
    bridge (GitHub's runners), host networking where it has none (engines started with
    --bridge=none, like prepare.sh's)."""
    if ENGINE_PROBLEM is not None:
        return "host"
    client = images.connect()
    try:
        return "ports" if client.networks.list(names=["bridge"]) else "host"
    finally:
        client.close()


OPEN_NETWORK = _open_network()
ISOLATION_PROBLEM = netns.enter_problem()
# The default where the gate can have it (root); the tests of the other modes name theirs.
NETWORK = "isolated" if ISOLATION_PROBLEM is None else OPEN_NETWORK
needs_isolation = pytest.mark.skipif(
    ISOLATION_PROBLEM is not None, reason=f"network: isolated: {ISOLATION_PROBLEM}"
)

# The stand-in API: its behaviour is chosen by MODE, so every test shares one cached image.
SERVER = """
import http.server, os, socket, sys, time, urllib.parse, urllib.request

mode = os.environ.get("MODE", "ok")
port = int(os.environ["PORT"])
print(f"server {mode} on {port}", os.environ.get("DATABASE_URL"), flush=True)
if mode == "probe":  # where can it connect? errno 0 = connected, with the time it took
    print("interfaces", ",".join(name for _, name in socket.if_nameindex()), flush=True)
    database = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    targets = {"metadata": ("169.254.169.254", 80), "outside": ("1.1.1.1", 443),
               "database": (database.hostname, database.port)}
    for name, address in targets.items():
        started = time.monotonic()
        with socket.socket() as probe:
            probe.settimeout(5)
            code = probe.connect_ex(address)
            if code == 0 and name == "database":  # PostgreSQL's SSLRequest: it answers S or N
                probe.sendall(bytes([0, 0, 0, 8, 4, 210, 22, 47]))
                code = probe.recv(1).decode()
        print(f"probe {name} {code} {time.monotonic() - started:.2f}s", flush=True)
if mode == "exit":
    print("giving up at once", flush=True)
    sys.exit(3)
if mode == "hog":
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))
        time.sleep(0.01)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200
        if mode == "sick":
            status = 500
        elif mode == "service" and self.path == "/healthz":
            try:
                urllib.request.urlopen(os.environ["SERVICE_URL"], timeout=2).read()
            except OSError as exc:
                print("service unreachable:", exc, flush=True)
                status = 503
        print("request", self.path, flush=True)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", port), Handler).serve_forever()
"""

DOCKERFILE = f"""FROM {PYTHON_IMAGE}
COPY server.py /srv/server.py
CMD ["python3", "/srv/server.py"]
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A checkout with the stand-in API and its Dockerfile."""
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "server.py").write_text(SERVER)
    (directory / "Dockerfile").write_text(DOCKERFILE)
    return directory


@pytest.fixture
def run_id() -> Iterator[str]:
    """A run id of the test's own; afterwards nothing carrying it may be left on the engine."""
    run = f"test-{uuid.uuid4().hex[:10]}"
    yield run
    if ENGINE_PROBLEM is None:
        assert_nothing_left(run)


def labelled_objects() -> set[str]:
    """Containers, networks and volumes that this process made, or whose maker is gone: other
    processes on the machine (a developer's own run) may have runs going meanwhile."""
    client = images.connect()
    try:
        selector = {"label": LABEL_RUN}
        objects = [
            *(
                ("container", c.name, c.labels)
                for c in client.containers.list(all=True, filters=selector)
            ),
            *(
                ("network", n.name, n.attrs.get("Labels"))
                for n in client.networks.list(filters=selector)
            ),
            *(
                ("volume", v.name, v.attrs.get("Labels"))
                for v in client.volumes.list(filters=selector)
            ),
        ]
    finally:
        client.close()
    return {
        f"{kind} {name}"
        for kind, name, labels in objects
        if (labels or {}).get(LABEL_PID) == str(os.getpid()) or not creator_alive(labels)
    }


@pytest.fixture(autouse=True)
def nothing_new_left_behind() -> Iterator[None]:
    """Whatever run ids a test used (the pipeline makes its own), it leaves nothing behind."""
    if ENGINE_PROBLEM is not None:
        yield
        return
    before = labelled_objects()
    yield
    assert labelled_objects() - before == set()


def assert_nothing_left(run: str) -> None:
    client = images.connect()
    try:
        selector = {"label": f"{LABEL_RUN}={run}"}
        left = [c.name for c in client.containers.list(all=True, filters=selector)]
        left += [n.name for n in client.networks.list(filters=selector)]
        left += [v.name for v in client.volumes.list(filters=selector)]
    finally:
        client.close()
    assert left == [], f"left behind by run {run}: {left}"


def settings(**overrides) -> Containers:
    return Containers.model_validate({"network": NETWORK, **overrides})


def spec(mode: str = "ok", **kwargs) -> ApiSpec:
    return ApiSpec(command="(the image's CMD)", env={"MODE": mode}, **kwargs)


# --- without an engine ----------------------------------------------------------------------


def test_without_an_engine_the_error_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    sandbox = ContainersSandbox(settings())
    with pytest.raises(EngineUnavailable) as caught:
        sandbox.start()
    message = str(caught.value)
    assert "unix:///nonexistent/docker.sock" in message
    assert "prepare.sh" in message and "dockerd --iptables=false --bridge=none" in message
    sandbox.stop()  # harmless after a failed start


def test_cli_without_an_engine_exits_2_with_the_command(tmp_path: Path):
    repo = tmp_path / "repo"
    subprocess.run(
        [sys.executable, "examples/build_demo.py", str(repo)], check=True, capture_output=True
    )
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "validate", "--repo", str(repo)),
            *("--head", "builder/P1-SCHEMA-002", "--sandbox", "containers"),
            *("--policy", "policies/sessions-api.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no container engine answers" in proc.stderr
    assert "dockerd --iptables=false --bridge=none" in proc.stderr


def test_limits_become_engine_settings():
    from bot.sandbox.containers import _limit_kwargs

    limits = ContainerLimits(cpus=1.5, memory="256m", pids=64)
    assert _limit_kwargs(limits) == {
        "nano_cpus": 1_500_000_000,
        "mem_limit": "256m",
        "memswap_limit": "256m",
        "pids_limit": 64,
    }
    assert _limit_kwargs(ContainerLimits()) == {}


def test_from_lines_name_the_images_a_build_starts_from():
    from bot.sandbox.images import _parents

    dockerfile = textwrap.dedent(
        """\
        ARG BASE=gatekeeper/python:3.11
        FROM ${BASE} AS build
        RUN true
        FROM build AS test
        FROM --platform=linux/amd64 debian AS final
        COPY --from=build /x /x
        """
    )
    assert _parents(dockerfile, {}) == ["gatekeeper/python:3.11", "debian:latest"]
    assert _parents(dockerfile, {"BASE": "python:3.12-slim"})[0] == "python:3.12-slim"


def test_policy_keys_for_the_containers_sandbox():
    from pydantic import ValidationError

    from bot.policy.model import Policy

    policy = Policy.model_validate(
        {
            "api": {"command": "serve"},
            "sandbox": "containers",
            "containers": {
                "network": "host",
                "api": {"dockerfile": "deploy/Dockerfile", "target": "runtime"},
                "services": [{"name": "cache", "image": "redis:7", "ports": [6379]}],
                "limits": {"memory": "512m"},
            },
        }
    )
    assert policy.sandbox == "containers" and policy.containers.api.target == "runtime"
    assert Policy.model_validate({"api": {"command": "serve"}}).sandbox == "local"
    for bad in (
        {"network": "bridge"},
        {"limits": {"memory": "lots"}},
        {"sweep_after": "soon"},
        {"services": [{"name": "database", "image": "x"}]},
        {"services": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
    ):
        with pytest.raises(ValidationError):
            Policy.model_validate({"api": {"command": "serve"}, "containers": bad})


# --- PostgreSQL and the API -------------------------------------------------------------------


@needs_engine
@pytest.mark.parametrize("network", sorted({NETWORK, OPEN_NETWORK}))
def test_database_and_api_run_and_the_database_outlives_api_restarts(
    app: Path, run_id: str, network: str
):
    with ContainersSandbox(settings(network=network), database="shop", run_id=run_id) as sandbox:
        url = urlsplit(sandbox.database_url)
        assert (url.hostname, url.username, url.path) == ("127.0.0.1", "postgres", "/shop")
        assert sandbox.psql("SELECT current_database() AS db") == [{"db": "shop"}]
        assert sandbox.psql("SHOW fsync") == [{"fsync": "off"}]  # the local sandbox's settings
        assert {"uuid-ossp", "pgcrypto"} <= sandbox.available_extensions()
        sandbox.psql("CREATE TABLE item (id int)")
        sandbox.psql("INSERT INTO item VALUES (1)")

        first = sandbox.start_api(app, spec(), "base")
        assert httpx.get(first + "/healthz", trust_env=False).status_code == 200
        mark = sandbox.log_mark("api")
        httpx.get(first + "/after-the-mark", trust_env=False)
        after = sandbox.logs("api", mark)
        assert "request /after-the-mark" in after and "server ok" not in after

        second = sandbox.start_api(app, spec(), "head")
        assert sandbox.api_url == second
        assert sandbox.psql("SELECT id FROM item") == [{"id": 1}]  # the same database
        log = sandbox.logs("api")
        assert log.index("=== gatekeeper: start base") < log.index("=== gatekeeper: start head")
        assert f"@{'database' if network == 'ports' else '127.0.0.1'}:" in log
        assert [b.cached for b in sandbox.builds][-1] is True  # unchanged context: no rebuild
        assert sandbox.stop_api() is not None
        assert sandbox.api_url is None

        with pytest.raises(psycopg.errors.DivisionByZero):
            sandbox.psql("SELECT 1 / 0")
        assert "ERROR:  division by zero" in sandbox.logs("database")


@needs_engine
def test_image_cache_follows_the_build_context(app: Path, run_id: str):
    with ContainersSandbox(settings(), run_id=run_id) as sandbox:
        sandbox.start_api(app, spec(), "one")
        first = sandbox.builds[-1]
        (app / "__pycache__").mkdir()
        (app / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"bytecode")
        (app / ".dockerignore").write_text("__pycache__/\n")
        sandbox.start_api(app, spec(), "two")
        ignored = sandbox.builds[-1]
        (app / "server.py").write_text(SERVER + f"\n# changed: {uuid.uuid4()}\n")
        sandbox.start_api(app, spec(), "three")
        changed = sandbox.builds[-1]
    # .dockerignore itself is part of the context, so adding it changes the key once.
    assert ignored.key != first.key
    assert changed.key != ignored.key and not changed.cached
    (app / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"other bytecode")
    with ContainersSandbox(settings(), run_id=run_id) as sandbox:
        sandbox.start_api(app, spec(), "again")
        assert sandbox.builds[-1].cached and sandbox.builds[-1].key == changed.key
    client = images.connect()  # an image no later run can use: do not let them pile up
    try:
        client.images.remove(changed.reference)
    finally:
        client.close()


def test_the_image_key_leaves_out_what_the_gate_wrote_into_the_checkout(app: Path):
    """The migrations and seed run on the host and write bytecode (each .pyc holding its
    source's mtime, new with every checkout), and `.git` is a worktree pointer naming the
    run's scratch directory: with either in the key every run rebuilt an unchanged API."""

    def context() -> tuple[list[str], str]:
        built = images._Context(images.BuildRequest(workdir=app, name="base"))
        return built.files, built.digest().hexdigest()

    files, key = context()
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"bytecode of this checkout")
    (app / ".git").write_text(
        f"gitdir: /tmp/gatekeeper-scratch-{uuid.uuid4()}/.git/worktrees/base\n"
    )
    assert context() == (files, key)
    (app / "server.py").write_text(SERVER + "\n# changed\n")
    assert context()[1] != key


@needs_engine
def test_limits_apply_to_the_containers(app: Path, run_id: str):
    limits = {"cpus": 0.5, "memory": "300m", "pids": 200}
    with ContainersSandbox(settings(limits=limits), run_id=run_id) as sandbox:
        sandbox.start_api(app, spec(), "limited")
        client = images.connect()
        try:
            for container in client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
                host = container.attrs["HostConfig"]
                assert host["NanoCpus"] == 500_000_000, container.name
                assert host["Memory"] == 300 * 1024 * 1024, container.name
                assert host["PidsLimit"] == 200, container.name
        finally:
            client.close()


# --- bad input --------------------------------------------------------------------------------


@needs_engine
def test_a_dockerfile_that_fails_to_build_raises_build_failed_with_the_log(app: Path, run_id: str):
    (app / "Dockerfile").write_text(
        f"FROM {PYTHON_IMAGE}\nRUN echo compiling the frobnicator && exit 7\n"
    )
    with ContainersSandbox(settings(), run_id=run_id) as sandbox:
        with pytest.raises(BuildFailed) as caught:
            sandbox.start_api(app, spec(), "head")
        assert sandbox.api_url is None
    failure = caught.value
    assert failure.name == "head" and failure.workdir == app
    assert "does not build" in str(failure) and "returned a non-zero code: 7" in str(failure)
    assert "compiling the frobnicator" in failure.log_tail


@needs_engine
@pytest.mark.parametrize("build_network", [False, True])
def test_the_image_build_has_no_network_unless_the_policy_gives_builds_one(
    app: Path, run_id: str, build_network: bool
):
    """A RUN step sees the interfaces of its build: loopback only, like every build of the
    change, unless `build.network: true` (installing dependencies)."""
    listing = "python3 -c 'import socket; print(sorted(n for _, n in socket.if_nameindex()))'"
    (app / "Dockerfile").write_text(f"FROM {PYTHON_IMAGE}\nRUN {listing} && exit 9\n")
    with (
        ContainersSandbox(settings(), run_id=run_id, build_network=build_network) as sandbox,
        pytest.raises(BuildFailed) as caught,
    ):
        sandbox.start_api(app, spec(), "head")
    assert ("['lo']" in caught.value.log_tail) is not build_network, caught.value.log_tail


@needs_engine
def test_a_missing_dockerfile_is_the_checkouts_fault(app: Path, run_id: str):
    (app / "Dockerfile").unlink()
    with (
        ContainersSandbox(settings(), run_id=run_id) as sandbox,
        pytest.raises(BuildFailed, match="no Dockerfile at Dockerfile"),
    ):
        sandbox.start_api(app, spec(), "head")


@needs_engine
def test_a_missing_base_image_is_the_machines_fault(app: Path, run_id: str):
    (app / "Dockerfile").write_text("FROM gatekeeper/no-such-image:1\n")
    with (
        ContainersSandbox(settings(), run_id=run_id) as sandbox,
        pytest.raises(SandboxError) as caught,
    ):
        sandbox.start_api(app, spec(), "head")
    assert not isinstance(caught.value, BuildFailed)
    assert "gatekeeper/no-such-image:1" in str(caught.value) and "prepare.sh" in str(caught.value)


@needs_engine
def test_an_image_that_exits_at_once(app: Path, run_id: str):
    with ContainersSandbox(settings(), run_id=run_id) as sandbox:
        started = time.monotonic()
        with pytest.raises(ApiStartError) as caught:
            sandbox.start_api(app, spec("exit", start_timeout=60), "head")
        assert time.monotonic() - started < 30  # noticed the exit, did not wait for the timeout
        assert sandbox.api_url is None
    assert caught.value.returncode == 3
    assert "exited with code 3" in str(caught.value)
    assert "giving up at once" in caught.value.log_tail


@needs_engine
def test_a_health_url_that_never_answers(app: Path, run_id: str):
    with ContainersSandbox(settings(), run_id=run_id) as sandbox:
        started = time.monotonic()
        with pytest.raises(ApiStartError) as caught:
            sandbox.start_api(app, spec("sick", start_timeout=2), "head")
        assert 2 <= time.monotonic() - started < 20
    assert "did not answer" in str(caught.value) and "HTTP 500" in str(caught.value)
    assert "request /healthz" in caught.value.log_tail


@needs_engine
def test_a_container_over_its_memory_limit_is_killed_and_said_so(app: Path, run_id: str):
    overrides = {"api": {"limits": {"memory": "64m"}}}
    with (
        ContainersSandbox(settings(**overrides), run_id=run_id) as sandbox,
        pytest.raises(ApiStartError) as caught,
    ):
        sandbox.start_api(app, spec("hog", start_timeout=60), "head")
    assert caught.value.returncode == 137
    assert "exceeded its memory limit of 64 MiB" in str(caught.value)


@needs_engine
def test_a_database_image_that_exits_at_once(run_id: str):
    database = {"image": "gatekeeper/python", "version": "3.11"}  # no postgres in it
    sandbox = ContainersSandbox(settings(database=database), run_id=run_id)
    with pytest.raises(DatabaseStartError, match=r"exited with code|did not start"):
        sandbox.start()


@needs_engine
def test_a_database_image_that_is_missing(run_id: str):
    database = {"image": "gatekeeper/no-such-postgres", "version": "99"}
    sandbox = ContainersSandbox(settings(database=database), run_id=run_id)
    with pytest.raises(DatabaseStartError, match=r"could not be pulled.*prepare\.sh"):
        sandbox.start()


# --- services ---------------------------------------------------------------------------------


@needs_engine
@pytest.mark.parametrize("probe", ["health command", "port"])
def test_services_start_ready_and_the_api_reaches_them_by_name(app: Path, run_id: str, probe: str):
    port = 18000 + uuid.uuid4().int % 1000 if NETWORK == "host" else 8080
    health = ContainerHealth(
        command=f'python3 -c "import urllib.request; urllib.request.urlopen('
        f"'http://127.0.0.1:{port}/')\"",
        timeout=30,
    )
    service = ContainerService(
        name="files",
        image=PYTHON_IMAGE,
        # A second of start-up first: readiness must wait for the server, not the container.
        command=["sh", "-c", f"sleep 1 && exec python3 -m http.server {port}"],
        ports=[port],
        health=health if probe == "health command" else None,
    )
    with ContainersSandbox(settings(services=[service]), run_id=run_id) as sandbox:
        url = f"http://files:{port}/"
        api_spec = spec("service")
        api_spec.env["SERVICE_URL"] = url
        sandbox.start_api(app, api_spec, "head")
        assert "service unreachable" not in sandbox.logs("api")


@needs_engine
def test_a_service_that_never_gets_healthy(run_id: str):
    service = ContainerService(
        name="stuck",
        image=PYTHON_IMAGE,
        command=["sleep", "300"],
        health=ContainerHealth(command="exit 1", timeout=1, interval=0.2),
    )
    sandbox = ContainersSandbox(settings(services=[service]), run_id=run_id)
    with pytest.raises(SandboxError, match=r"service 'stuck'.*not ready within 1s"):
        sandbox.start()


# --- network: isolated -----------------------------------------------------------------------


def probes(log: str) -> dict[str, tuple[str, float]]:
    """The stand-in API's probe lines: target -> (errno or PostgreSQL's answer, seconds)."""
    found = {}
    for line in log.splitlines():
        if line.startswith("probe "):
            _, name, code, took = line.split()
            found[name] = (code, float(took.rstrip("s")))
    return found


@needs_engine
@needs_isolation
def test_isolated_containers_reach_their_database_and_nothing_beyond(app: Path, run_id: str):
    """The API connects to its database on the namespace's loopback; the metadata address and
    an outside one fail at once (ENETUNREACH: no route, so no packet leaves); the gate still
    reaches the database and the API through its relays, and a command entering the sandbox's
    namespace (as the pipeline starts the migration command) reaches the database."""
    with ContainersSandbox(settings(network="isolated"), run_id=run_id) as sandbox:
        assert sandbox.netns is not None and sandbox.netns.exists()
        assert "no egress" in sandbox.network_note and "not isolated" not in sandbox.network_note
        url = sandbox.start_api(app, spec("probe"), "head")
        assert httpx.get(url + "/from-the-gate", trust_env=False).status_code == 200
        assert sandbox.psql("SELECT 1 AS one") == [{"one": 1}]
        log = sandbox.logs("api")
        assert "interfaces lo\n" in log
        found = probes(log)
        assert found["database"][0] in ("S", "N"), log  # PostgreSQL answered
        for target in ("metadata", "outside"):
            code, took = found[target]
            assert code == "101" and took < 1, f"{target}: {found[target]}"
        assert "request /from-the-gate" in log

        command = "import os, psycopg; psycopg.connect(os.environ['URL']).execute('SELECT 1')"
        inside = subprocess.run(
            ["nsenter", f"--net={sandbox.netns}", sys.executable, "-c", command],
            env={**os.environ, "URL": sandbox.app_database_url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert inside.returncode == 0, inside.stderr

        client = images.connect()
        try:
            ours = client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"})
            role = images.LABEL_ROLE
            modes = {c.labels[role]: c.attrs["HostConfig"]["NetworkMode"] for c in ours}
            holder = next(c for c in ours if c.labels[role] == "network")
        finally:
            client.close()
        assert modes == {
            "network": "none",
            "database": f"container:{holder.id}",
            "api": f"container:{holder.id}",
        }
    assert sandbox.netns is None  # gone with its holder


@needs_engine
@needs_isolation
def test_isolated_database_keeps_off_the_ports_of_services(run_id: str):
    """Every container of an isolated run shares one loopback: a service on PostgreSQL's
    port moves the database to the next free one, and both answer."""
    service = ContainerService(
        name="other",
        image=PYTHON_IMAGE,
        command=["python3", "-m", "http.server", "5432", "--bind", "127.0.0.1"],
        ports=[5432],
    )
    settings_ = settings(network="isolated", services=[service])
    with ContainersSandbox(settings_, run_id=run_id) as sandbox:
        assert urlsplit(sandbox.app_database_url).port == 5433
        assert sandbox.psql("SELECT current_setting('port') AS port") == [{"port": "5433"}]


@needs_engine
def test_open_network_modes_say_the_network_is_not_isolated(run_id: str):
    with ContainersSandbox(settings(network=OPEN_NETWORK), run_id=run_id) as sandbox:
        assert sandbox.netns is None
        assert f"network not isolated (containers.network: {OPEN_NETWORK})" in (
            sandbox.network_note
        )


# Starts a sandbox as an account that may use the engine but is not root, and reports.
UNPRIVILEGED = """
import json
from bot.policy.model import Containers
from bot.sandbox.containers import ContainersSandbox

with ContainersSandbox(Containers(network="isolated")) as sandbox:
    rows = sandbox.psql("SELECT 1 AS one")
    print(json.dumps({"network": sandbox.network, "note": sandbox.network_note, "rows": rows}))
"""


@needs_engine
@needs_isolation
def test_a_gate_that_is_not_root_falls_back_and_says_so():
    """Entering a namespace needs root: an account of the engine's group gets the open mode
    this engine has, and the report's line says the network is not isolated."""
    socket_group = Path("/var/run/docker.sock").stat().st_gid
    child = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", f"--groups={socket_group}"),
            *(sys.executable, "-c", UNPRIVILEGED),
        ],
        cwd=Path.cwd(),
        env={**os.environ, "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    started = json.loads(child.stdout)
    assert started["network"] == OPEN_NETWORK and started["rows"] == [{"one": 1}]
    assert "entering a network namespace needs root" in started["note"]
    assert f"fell back to {OPEN_NETWORK}" in started["note"]
    assert "network not isolated" in started["note"]


# --- hygiene ----------------------------------------------------------------------------------


@needs_engine
def test_the_sweep_removes_old_leftovers_of_other_runs_only(run_id: str):
    client = images.connect()
    old_run, young_run = f"{run_id}-old", f"{run_id}-young"
    try:
        old = client.containers.create(
            POSTGRES_IMAGE,
            labels={LABEL_RUN: old_run, LABEL_CREATED: f"{time.time() - 3 * 3600:.0f}"},
        )
        young = client.containers.create(
            POSTGRES_IMAGE, labels={LABEL_RUN: young_run, LABEL_CREATED: f"{time.time():.0f}"}
        )
        old_volume = client.volumes.create(
            labels={LABEL_RUN: old_run, LABEL_CREATED: f"{time.time() - 3 * 3600:.0f}"}
        )
        # Young, but made here by a process that is gone: a crashed run, no need to wait.
        dead_pid = subprocess.Popen(["true"])
        dead_pid.wait()
        orphan = client.containers.create(
            POSTGRES_IMAGE,
            labels={
                LABEL_RUN: old_run,
                LABEL_CREATED: f"{time.time():.0f}",
                LABEL_HOST: socket.gethostname(),
                LABEL_PID: str(dead_pid.pid),
            },
        )
        removed = sweep(client, older_than=2 * 3600, images_older_than=1e9, keep_run=run_id)
        assert f"container {old.name}" in removed and f"volume {old_volume.name}" in removed
        assert f"container {orphan.name}" in removed
        names = [c.name for c in client.containers.list(all=True)]
        assert old.name not in names and orphan.name not in names and young.name in names
    finally:
        remove_run(client, old_run)
        remove_run(client, young_run)
        client.close()
    assert_nothing_left(old_run)
    assert_nothing_left(young_run)


# Starts a sandbox and an API, reports the run id, then waits to be interrupted; "atexit"
# exits at once without stopping anything and relies on the atexit hook.
CHILD = """
import json, sys, time
from pathlib import Path
from bot.policy.model import Containers
from bot.sandbox.base import ApiSpec
from bot.sandbox.containers import ContainersSandbox
from bot.sandbox.local import unwind_on_interrupts

mode, run_id, network, workdir = sys.argv[1:]
if mode != "atexit":  # as the CLI does; SIGINT may come in ignored (a background job)
    unwind_on_interrupts()
sandbox = ContainersSandbox(Containers(network=network), run_id=run_id)

def start_and_report():
    sandbox.start()
    sandbox.start_api(Path(workdir), ApiSpec(command="", env={"MODE": "ok"}), "demo")
    print(json.dumps({"api": sandbox.api_url}), flush=True)

if mode == "atexit":
    start_and_report()
    sys.exit(0)
if mode == "starting":
    start_and_report()
    time.sleep(300)
try:
    start_and_report()
    time.sleep(300)
finally:
    sandbox.stop()
"""


def count_labelled(run: str) -> int:
    client = images.connect()
    try:
        selector = {"label": f"{LABEL_RUN}={run}"}
        return len(client.containers.list(all=True, filters=selector)) + len(
            client.volumes.list(filters=selector)
        )
    finally:
        client.close()


@needs_engine
@pytest.mark.parametrize(
    ("mode", "interrupt"),
    [("sigint", signal.SIGINT), ("sigterm", signal.SIGTERM), ("atexit", None)],
)
def test_an_interrupted_run_leaves_nothing_behind(
    app: Path, run_id: str, mode: str, interrupt: signal.Signals | None
):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, run_id, NETWORK, str(app)],
        stdout=subprocess.PIPE,
        text=True,
    )
    with reaped(child):
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        assert started["api"] and count_labelled(run_id) >= 2
        if interrupt is not None:
            child.send_signal(interrupt)
        child.wait(timeout=60)
    # the run_id fixture asserts that no container, network or volume of the run is left


@needs_engine
@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_ctrl_c_while_starting_leaves_nothing_behind(app: Path, run_id: str, delay: float):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "starting", run_id, NETWORK, str(app)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    interrupt_after(child, delay)


# --- through the pipeline and the command line ------------------------------------------------


def demo_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run(
        [sys.executable, "examples/build_demo.py", str(repo)], check=True, capture_output=True
    )
    return repo


def containers_policy(tmp_path: Path) -> Path:
    """The demo's policy with `sandbox: containers` and this engine's network mode."""
    text = Path("policies/sessions-api.yml").read_text()
    text = text.replace("sandbox: local", "sandbox: containers")
    text = text.replace("network: isolated", f"network: {NETWORK}")
    # Suites stay inside the policy's own tree: a copy of checks/ beside it.
    gate = tmp_path / "gate"
    shutil.copytree("checks", gate / "checks")
    path = gate / "policy.yml"
    path.write_text(text.replace("../checks/", "checks/"))
    return path


@needs_engine
@pytest.mark.slow
def test_validate_with_the_policys_containers_sandbox(tmp_path: Path):
    repo = demo_repo(tmp_path)
    env = {
        **os.environ,
        "SESSIONS_JWT_SECRET": "a-secret-for-this-test-only-0123456789abcdef",
        "GATEKEEPER_PASS_ENV": "SESSIONS_JWT_SECRET",
    }
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "validate", "--repo", str(repo), "--json"),
            *("--head", "builder/P1-SCHEMA-002", "--policy", str(containers_policy(tmp_path))),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert (verdict["decision"], verdict["risk"]) == ("approve", "low")
    assert (
        "=== gatekeeper: start head (second start) (container" in verdict["evidence"]["logs"]["api"]
    )


@needs_engine
@pytest.mark.slow
def test_a_change_whose_image_does_not_build_is_rejected_with_the_build_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from bot.engine.job import Job
    from bot.engine.pipeline import validate
    from bot.gitrepo import resolve
    from bot.policy import load_policy
    from bot.sandbox.select import factory

    repo = demo_repo(tmp_path)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "checkout", "-q", "-b", "builder/broken-image", "main"], check=True)
    dockerfile = repo / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "COPY app ./app\n", "COPY app ./app\nRUN echo linking the frobnicator && exit 4\n"
        )
    )
    subprocess.run([*git, "commit", "-q", "-am", "break the image"], check=True)
    monkeypatch.setenv("SESSIONS_JWT_SECRET", "a-secret-for-this-test-only-0123456789abcdef")
    monkeypatch.setenv("GATEKEEPER_PASS_ENV", "SESSIONS_JWT_SECRET")
    loaded = load_policy(containers_policy(tmp_path))
    job = Job(
        repository=str(repo),
        base_ref="main",
        head_ref="builder/broken-image",
        base_sha=resolve(repo, "main"),
        head_sha=resolve(repo, "builder/broken-image"),
        policy_source=loaded.source,
    )
    verdict = validate(job, repo, loaded, factory("containers"))
    assert verdict.decision.value == "reject", verdict.summary
    failed = [c for c in verdict.criteria if c.status.value == "failed"]
    assert any("linking the frobnicator" in c.evidence for c in failed), failed

    # The same broken image on the base branch: no baseline, so an error, never a verdict.
    job = job.model_copy(
        update={
            "base_ref": "builder/broken-image",
            "base_sha": job.head_sha,
            "head_ref": "builder/P1-SCHEMA-002",
            "head_sha": resolve(repo, "builder/P1-SCHEMA-002"),
        }
    )
    verdict = validate(job, repo, loaded, factory("containers"))
    assert verdict.decision.value == "error", verdict.summary
    assert "linking the frobnicator" in verdict.evidence.get("error_log", ""), verdict.evidence

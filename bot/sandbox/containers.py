"""The containers sandbox: PostgreSQL, the API under test and its services as containers.

The local sandbox is fast; this one is faithful. What gets validated is what gets deployed:
the API image is built from the checkout's own Dockerfile, PostgreSQL is the image (and major
version) the policy names, and the services the API needs run beside it. The pipeline cannot
tell the two apart: it gets `database_url` and `api_url`, starts the API several times on one
database, and reads both logs by position.

Containers are driven through testcontainers (the docker SDK underneath), with its reaper
disabled: the reaper is an image to pull, and registries may be out of reach. Cleaning up is
therefore this module's own duty, done the way `local.py` does it for processes:
- every container, network and volume carries the run's id (label `gatekeeper.run`) and is
  removed on success, failure, timeout and interrupt; `stop()` also removes anything else
  labelled with the run's id, so a container created a moment before Ctrl-C is not lost;
- creating a container and recording it, and the whole of `stop()`, run with Ctrl-C and
  SIGTERM deferred; `stop()` is registered with atexit too;
- what a crashed run (SIGKILL, power loss) left is removed by the sweep at the next start,
  once older than `containers.sweep_after`, so concurrent runs never remove each other's.

Networking follows the policy:
- `isolated` (the default): the change's code reaches its database and services and nothing
  else. One container per run holds a network namespace with only a loopback (it is started
  with `--network none` and does nothing); the database, the services and the API join it
  (`network_mode: container:<holder>`), so they reach each other on 127.0.0.1 and every other
  address fails at once. The gate reaches the database and the API through relays into that
  namespace (netns.py), and gives its path (`netns`) to the pipeline, which runs the change's
  migration command there. It works without bridge networking, and needs root (entering a
  namespace): a gate that is not root falls back to `ports` where the engine has a bridge,
  else `host`, and the report says the network is not isolated;
- `ports`: a network of the run's own, ports published on 127.0.0.1 (Docker's usual setup);
- `host`: the host's network, each service on a free loopback port.
In `ports` and `host` the containers and the migration command reach any address the host can.
"""

from __future__ import annotations

import atexit
import calendar
import io
import logging
import os
import re
import secrets
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import docker
import docker.errors
import httpx
import psycopg
from docker.models.containers import Container
from psycopg.sql import SQL, Identifier
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from bot.policy.loader import expand
from bot.policy.model import (
    ContainerLimits,
    Containers,
    ContainerService,
    duration_seconds,
)
from bot.sandbox import dump, environment, images, netns
from bot.sandbox.base import (
    ApiSpec,
    ApiStartError,
    DatabaseStartError,
    LogSource,
    Sandbox,
    SandboxError,
    signals_deferred,
)
from bot.sandbox.images import (
    LABEL_CONTEXT,
    LABEL_CREATED,
    LABEL_HOST,
    LABEL_PID,
    LABEL_ROLE,
    LABEL_RUN,
)
from bot.sandbox.postgres import APP_ROLE, SERVER_DEFAULTS, SUPERUSER, last_lines

HOST = "127.0.0.1"
DATABASE_ALIAS = "database"  # the database's host name on the run's network (ports mode)
# What the holder of an isolated run's namespace runs: nothing, for 68 years (GNU and
# busybox `sleep` alike; `infinity` is GNU's only).
_HOLD = ["sleep", "2147483647"]
_DB_PORT = 5432
_API_STOP_TIMEOUT = 5
_PORT_ATTEMPTS = 4
_POLL = 0.05
# Where PostgreSQL images (the official one, prepare.sh's) keep the server's socket; local
# connections there are trusted, so the gate's programs in the container need no password.
_SOCKET_DIR = "/var/run/postgresql"
# Container logs travel from the container's pipe through the engine before the API can
# return them (a millisecond or two; reads after 5 ms still missed lines here, after 10 ms none
# did): a read waits this long before it asks, so that it holds whatever came before it.
_LOG_SETTLE = 0.02
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)

log = logging.getLogger("gatekeeper.sandbox.containers")
T = TypeVar("T")


class ContainersSandbox(Sandbox):
    """PostgreSQL, services and the API under test as labelled containers of one run."""

    def __init__(
        self,
        settings: Containers | None = None,
        *,
        database: str = "app",
        run_id: str | None = None,
        environ: Mapping[str, str] | None = None,
        source: str = "policy",
        nocache: bool = False,
        build_network: bool = False,
    ):
        """`environ` expands ${NAME} in build args and container env, from the variables it
        passes (GATEKEEPER_PASS_ENV; default: os.environ's);
        `source` names the policy in the messages of that expansion; `nocache` builds every
        image from scratch, bypassing both caches (for measuring a cold start);
        `build_network` (the policy's `build.network`) gives the image build's RUN steps the
        network, which they otherwise lack like every other build of the change."""
        self.settings = settings or Containers()
        self.build_network = build_network
        self.database = database
        self.run_id = _safe(run_id) if run_id else uuid.uuid4().hex[:12]
        self.environ = environment.passed(os.environ if environ is None else environ)
        self.source = source
        self.nocache = nocache
        self.database_url = ""
        self.api_url = None
        self.builds: list[images.BuiltImage] = []  # every image start_api used, for evidence
        self.swept: list[str] = []  # what the start-up sweep removed
        self._client: docker.DockerClient | None = None
        # The mode this run uses: the policy's, unless `isolated` cannot be had here (start).
        self.network = self.settings.network
        self.network_note = ""
        self._network: Network | None = None
        self._holder: Container | None = None
        self._relays: dict[int, netns.Relay] = {}
        self._gate_app_url = ""
        self._volume: Any = None
        self._database: DockerContainer | None = None
        self._services: list[DockerContainer] = []
        self._api: DockerContainer | None = None
        self._api_count = 0
        self._api_database_url = ""
        self._password = ""
        self._app_password = ""
        self._logs: dict[LogSource, _Log] = {"api": _Log(), "database": _Log()}
        self._started = False

    @property
    def host_network(self) -> bool:
        return self.network == "host"

    @property
    def isolated(self) -> bool:
        return self.network == "isolated"

    @property
    def gate_app_url(self) -> str:
        """The application role as the gate reaches it: through a relay when isolated."""
        return self._gate_app_url or self.app_database_url

    @property
    def labels(self) -> dict[str, str]:
        """The labels every object of this run carries: who made it, where and when."""
        return {
            LABEL_RUN: self.run_id,
            LABEL_CREATED: f"{time.time():.0f}",
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
        }

    # --- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise SandboxError("the sandbox is already started")
        # The reaper is an image to pull; this module removes what it creates itself.
        testcontainers_config.ryuk_disabled = True
        with signals_deferred():
            atexit.register(self.stop)
            self._started = True
        try:
            self._client = images.connect()
            self.swept = sweep(
                self._client,
                older_than=duration_seconds(self.settings.sweep_after),
                images_older_than=duration_seconds(self.settings.keep_images),
                keep_run=self.run_id,
            )
            self._choose_network(self._client)
            self._start_network()
            self._start_database()
            for service in self.settings.services:
                self._start_service(service)
        except BaseException:
            self.stop()
            raise

    def _choose_network(self, client: docker.DockerClient) -> None:
        """The mode this run uses, and what the report's isolation line says about it."""
        self.network = self.settings.network
        cause = f"containers.network: {self.network}"
        if self.network == "isolated":
            problem = netns.enter_problem()
            if problem is None:
                self.network_note = (
                    "; the database, services and API containers share a network namespace "
                    "holding only a loopback (no egress), where the migration command runs "
                    "too; the API image builds "
                    + (
                        "with the engine's network (build.network)"
                        if self.build_network
                        else "without a network"
                    )
                )
                return
            self.network = "ports" if client.networks.list(names=["bridge"]) else "host"
            cause = f"{problem}: containers.network: isolated fell back to {self.network}"
        where = "the host's network" if self.host_network else "a network with a route out"
        self.network_note = (
            f"; the containers run on {where} and the migration command on the host's: "
            f"network not isolated ({cause})"
        )

    def _start_network(self) -> None:
        if self.isolated:
            self._start_holder()
            return
        if self.host_network:
            return
        network = Network(docker_network_kw={"labels": {**self.labels, LABEL_ROLE: "network"}})
        network.name = f"gatekeeper-{self.run_id}"
        with signals_deferred():
            self._network = network.create()

    def _start_holder(self) -> None:
        """The container holding an isolated run's network namespace: started with no
        network but loopback, running nothing but a sleep, from the database's image (which
        the run needs anyway). The other containers join it; its extra hosts (the services'
        names, on 127.0.0.1) are theirs too, so one policy's URLs work in every mode."""
        client = self._require_client()
        reference = self._database_image()
        kwargs = {
            "name": f"gatekeeper-{self.run_id}-network",
            "entrypoint": _HOLD,
            "network_mode": "none",
            "extra_hosts": {s.name: HOST for s in self.settings.services},
            "labels": {**self.labels, LABEL_ROLE: "network"},
            **_limit_kwargs(self.settings.limits),
        }
        with signals_deferred():
            try:
                self._holder = client.containers.run(reference, detach=True, **kwargs)
            except docker.errors.APIError as exc:
                reason = _first_line(exc.explanation or str(exc))
                raise SandboxError(f"the run's network container did not start: {reason}") from None
        self._holder.reload()
        if self._holder.status != "running":
            raise SandboxError(
                f"the run's network container exited at once (`{' '.join(_HOLD)}` in {reference})",
                _container_tail(self._holder),
            )
        self.netns = _namespace(self._holder)

    def _database_image(self) -> str:
        """The database's image reference, on the engine (pulled if need be)."""
        settings = self.settings.database
        reference = f"{settings.image}:{settings.version}"
        try:
            images.ensure_image(self._require_client(), reference, "database")
        except SandboxError as exc:
            raise DatabaseStartError(str(exc)) from None
        return reference

    def _start_database(self) -> None:
        settings = self.settings.database
        client = self._require_client()
        reference = self._database_image()
        self._password = secrets.token_urlsafe(18)
        self._app_password = secrets.token_urlsafe(18)
        with signals_deferred():
            self._volume = client.volumes.create(
                name=f"gatekeeper-{self.run_id}-pgdata",
                labels={**self.labels, LABEL_ROLE: "database"},
            )
        deadline = time.monotonic() + settings.start_timeout
        if self.host_network:
            port = _on_free_port(lambda port: self._run_database(reference, port, deadline))
            self.database_url = self._url(HOST, port)
            self.app_database_url = self._url(HOST, port, APP_ROLE)
            self._api_database_url = self.app_database_url
        elif self.isolated:
            # The change's URL is the namespace's loopback; the gate's goes through a relay.
            # One loopback for every container: the database keeps off the others' ports.
            taken = {self.settings.api.port, *(p for s in self.settings.services for p in s.ports)}
            port = next(p for p in range(_DB_PORT, 65536) if p not in taken)
            self._run_database(reference, port, deadline)
            gate = self._relay(port).port
            self.database_url = self._url(HOST, gate)
            self._gate_app_url = self._url(HOST, gate, APP_ROLE)
            self.app_database_url = self._url(HOST, port, APP_ROLE)
            self._api_database_url = self.app_database_url
        else:
            self._run_database(reference, _DB_PORT, deadline)
            published = _published(self._database, _DB_PORT)
            self.database_url = self._url(HOST, published)
            self.app_database_url = self._url(HOST, published, APP_ROLE)
            self._api_database_url = self._url(DATABASE_ALIAS, _DB_PORT, APP_ROLE)
        self._create_app_role()

    def _create_app_role(self) -> None:
        """The change connects as the database's owner, not as the superuser (see
        postgres.APP_ROLE); the image's superuser password stays with the gate."""
        role, database = Identifier(APP_ROLE), Identifier(self.database)
        self.psql(SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, self._app_password))
        self.psql(SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
        self.psql(SQL("ALTER SCHEMA public OWNER TO {}").format(role))

    def _run_database(self, reference: str, port: int, deadline: float) -> int:
        settings = self.settings.database
        env = {
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": self._password,
            "POSTGRES_DB": self.database,
            "PGDATA": settings.data_dir,
            "PGPORT": str(port),
            **self._expand(settings.env, "containers.database.env"),
        }
        # The same server settings as the local sandbox: the same log lines to read, the same
        # thrown-away durability.
        command = ["postgres"]
        server = dict(SERVER_DEFAULTS)
        if self.host_network or self.isolated:
            server["listen_addresses"] = HOST
        for name, value in server.items():
            command += ["-c", f"{name}={value}"]
        container = DockerContainer(reference, env=env, command=command)
        container.with_name(f"gatekeeper-{self.run_id}-database")
        container.with_volume_mapping(self._volume.name, settings.data_dir, "rw")
        kwargs = self._container_kwargs("database", settings.limits)
        if self.network == "ports":
            container.ports[f"{_DB_PORT}/tcp"] = (HOST, None)
            self._join_network(container, DATABASE_ALIAS)
        container.with_kwargs(**kwargs)
        mark = self._logs["database"].mark()
        self._start_container(container, "database", "database")
        self._database = container
        try:
            self._wait_for_database(container, port, deadline, mark)
        except _PortTaken:
            self._remove_database()
            raise
        return port

    def _wait_for_database(
        self, container: DockerContainer, port: int, deadline: float, mark: int
    ) -> None:
        wrapped = container.get_wrapped_container()
        url = ""
        while True:
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                tail = last_lines(self._logs["database"].text(mark))
                code = wrapped.attrs["State"].get("ExitCode")
                error = DatabaseStartError(
                    f"the PostgreSQL container exited with code {code}{_oom(wrapped)}", tail
                )
                if _PORT_IN_USE.search(tail):
                    raise _PortTaken(error)
                raise error
            if not url and wrapped.status == "running":
                url = self._url(HOST, self._gate_port(container, port))  # the entrypoint's
            if url and _accepts(url):
                return
            if time.monotonic() > deadline:
                raise DatabaseStartError(
                    "the PostgreSQL container did not accept connections within "
                    f"{self.settings.database.start_timeout:g}s "
                    "(containers.database.start_timeout)",
                    last_lines(self._logs["database"].text(mark)),
                )
            time.sleep(_POLL)

    def _url(self, host: str, port: int, role: str = SUPERUSER) -> str:
        name = quote(self.database, safe="")
        secret = self._password if role == SUPERUSER else self._app_password
        return f"postgresql://{role}:{quote(secret, safe='')}@{host}:{port}/{name}"

    def _start_service(self, service: ContainerService) -> None:
        client = self._require_client()
        images.ensure_image(client, service.image, f"service '{service.name}'")
        env = self._expand(service.env, f"containers.services.{service.name}.env")
        container = DockerContainer(service.image, env=env, command=service.command)
        container.with_name(f"gatekeeper-{self.run_id}-{service.name}")
        kwargs = self._container_kwargs("service", service.limits)
        kwargs["init"] = True
        if self.network == "ports":
            for port in service.ports:
                container.ports[f"{port}/tcp"] = (HOST, None)
            self._join_network(container, service.name)
        container.with_kwargs(**kwargs)
        self._start_container(container, "service", service.name)
        self._services.append(container)
        self._wait_for_service(container, service)

    def _wait_for_service(self, container: DockerContainer, service: ContainerService) -> None:
        wrapped = container.get_wrapped_container()
        timeout = service.health.timeout if service.health else 60.0
        deadline = time.monotonic() + timeout
        last = "not started"
        while True:
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                code = wrapped.attrs["State"].get("ExitCode")
                raise SandboxError(
                    f"service '{service.name}' ({service.image}) exited with code {code}"
                    f"{_oom(wrapped)}",
                    _container_tail(wrapped),
                )
            if wrapped.status == "running":
                ok, last = self._service_ready(container, service)
                if ok:
                    return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"service '{service.name}' ({service.image}) was not ready within "
                    f"{timeout:g}s (last: {last})",
                    _container_tail(wrapped),
                )
            time.sleep(service.health.interval if service.health else _POLL)

    def _service_ready(
        self, container: DockerContainer, service: ContainerService
    ) -> tuple[bool, str]:
        if service.health is not None:
            command = service.health.command
            if isinstance(command, str):
                command = ["/bin/sh", "-c", command]
            result = container.get_wrapped_container().exec_run(command)
            output = result.output.decode(errors="replace").strip().splitlines()
            detail = f": {output[-1]}" if output else ""
            return result.exit_code == 0, f"health command exited {result.exit_code}{detail}"
        for port in service.ports:
            problem = _listening(lambda port=port: self._connect(container, port))
            if problem:
                return False, f"port {port}: {problem}"
        return True, "running"

    # --- the API under test -----------------------------------------------------------------

    def start_api(self, workdir: Path, spec: ApiSpec, name: str) -> str:
        self._require_client()
        self.stop_api()
        built = self._image(Path(workdir), name)
        if self.host_network:
            return _on_free_port(lambda port: self._run_api(built.reference, port, spec, name))
        # Ports and isolated: a network of the API's own, where the policy's port is free.
        return self._run_api(built.reference, self.settings.api.port, spec, name)

    def _image(self, workdir: Path, name: str) -> images.BuiltImage:
        api = self.settings.api
        request = images.BuildRequest(
            workdir=workdir,
            name=name,
            context=api.context,
            dockerfile=api.dockerfile,
            target=api.target,
            build_args=self._expand(api.build_args, "containers.api.build_args"),
            # The host's network, as build commands get it with build.network; else none.
            network_mode="host" if self.build_network else "none",
            timeout=api.build_timeout,
            nocache=self.nocache,
        )
        built = images.build_api_image(
            self._require_client(), request, {**self.labels, LABEL_ROLE: "api"}
        )
        self.builds.append(built)
        return built

    def _run_api(self, reference: str, port: int, spec: ApiSpec, name: str) -> str:
        api = self.settings.api
        env = {
            **spec.env,
            spec.port_env: str(port),
            spec.database_url_env: spec.database_url(self._api_database_url),
        }
        self._api_count += 1
        container = DockerContainer(reference, env=env)
        container.with_name(f"gatekeeper-{self.run_id}-api-{self._api_count}")
        if api.command:
            container.with_command(["/bin/sh", "-c", api.command])
        kwargs = self._container_kwargs("api", api.limits)
        kwargs["init"] = True  # signals reach the API even when it runs as PID 1
        if self.host_network:
            # Service names resolve in every mode, so one policy's URLs work in each.
            kwargs["extra_hosts"] = {s.name: HOST for s in self.settings.services}
        elif self.network == "ports":
            container.ports[f"{port}/tcp"] = (HOST, None)
            self._join_network(container, "api")
        container.with_kwargs(**kwargs)
        mark = self._logs["api"].mark()
        self._start_container(container, "api", name)
        self._api = container
        url = f"http://{HOST}:{self._gate_port(container, port)}"
        health = url + spec.health_path
        last_answer = self._wait_for_health(container, health, spec.start_timeout)
        if last_answer is None:
            self.api_url = url
            return url
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        exited = wrapped.status in ("exited", "dead")
        oom = _oom(wrapped)
        returncode = self.stop_api()
        tail = last_lines(self._logs["api"].text(mark))
        if not exited:
            raise ApiStartError(
                f"API '{name}' did not answer {health} within {spec.start_timeout:g}s "
                f"(last: {last_answer})",
                tail,
            )
        message = f"API '{name}' exited with code {returncode}{oom} before answering {health}"
        if self.host_network and _PORT_IN_USE.search(tail):
            message += f" (its port was in use: does it listen on ${spec.port_env}?)"
            raise _PortTaken(ApiStartError(message, tail, returncode))
        if self.isolated and _PORT_IN_USE.search(tail):
            message += (
                f" (its port was in use: with network: isolated the API shares one loopback "
                f"with the services; containers.api.port is {port})"
            )
        raise ApiStartError(message, tail, returncode)

    def _wait_for_health(self, container: DockerContainer, url: str, timeout: float) -> str | None:
        """None once `url` answers 2xx; else the last thing it said before the container
        exited or the time ran out. trust_env=False: an HTTP_PROXY must not intercept it."""
        wrapped = container.get_wrapped_container()
        deadline = time.monotonic() + timeout
        last_answer = "no answer"
        with httpx.Client(trust_env=False) as client:
            while True:
                wrapped.reload()
                if wrapped.status in ("exited", "dead"):
                    return last_answer
                remaining = deadline - time.monotonic()
                try:
                    response = client.get(url, timeout=max(0.1, min(2.0, remaining)))
                except httpx.HTTPError as error:
                    last_answer = type(error).__name__
                else:
                    if response.is_success:
                        return None
                    last_answer = f"HTTP {response.status_code}"
                if time.monotonic() >= deadline:
                    return last_answer
                time.sleep(_POLL)

    def stop_api(self) -> int | None:
        with signals_deferred():
            container, self._api = self._api, None
            self.api_url = None
            if container is None:
                return None
            wrapped = container.get_wrapped_container()
            returncode: int | None = None
            with suppress(docker.errors.NotFound):
                wrapped.stop(timeout=_API_STOP_TIMEOUT)
                returncode = int(wrapped.wait(timeout=_API_STOP_TIMEOUT + 5)["StatusCode"])
            self._logs["api"].end(wrapped)
            _discard(container)
        return returncode

    # --- the database copied to another run (bot/sandbox/dump.py) -----------------------------

    def dump_database(self, path: Path, exclude_schema: str) -> None:
        """With the database container's own pg_dump (the server's version), through its
        socket: no password on any command line, the dump streamed out to `path`."""
        with open(path, "wb") as out:
            self._exec_database(["pg_dump", *dump.dump_options(exclude_schema)], out)

    def restore_database(self, path: Path, role: str) -> None:
        """With the database container's own pg_restore: the dump and its chosen entries are
        copied into the container's /tmp, restored, and removed."""
        inside = f"/tmp/gatekeeper-{self.run_id}.dump"
        self._put(inside, path.read_bytes())
        try:
            listing = self._exec_database(["pg_restore", "--list", inside], dbname=False)
            self._put(f"{inside}.list", dump.chosen(listing).encode())
            self._exec_database(
                ["pg_restore", *dump.restore_options(f"{inside}.list", role), inside]
            )
        finally:
            with suppress(SandboxError):
                self._exec_database(["rm", "-f", inside, f"{inside}.list"], dbname=False)

    def _exec_database(
        self, command: list[str], out: BinaryIO | None = None, *, dbname: bool = True
    ) -> str:
        """`command` in the database container, as its superuser through the local socket
        (the image's `trust` for local connections); its output into `out`, else returned.
        A non-zero exit is a SandboxError with the end of its errors."""
        if self._database is None:
            raise SandboxError("the sandbox is not running")
        if dbname:
            command = [
                *command,
                "--host",
                _SOCKET_DIR,
                "--username",
                SUPERUSER,
                "--dbname",
                self.database,
            ]
        api = self._require_client().api
        container = self._database.get_wrapped_container().id
        try:
            exec_id = api.exec_create(container, command, stdout=True, stderr=True)["Id"]
            output, errors = bytearray(), bytearray()
            for chunk, error in api.exec_start(exec_id, stream=True, demux=True):
                if chunk and out is not None:
                    out.write(chunk)
                elif chunk:
                    output.extend(chunk)
                if error:
                    errors.extend(error)
            code = api.exec_inspect(exec_id)["ExitCode"]
        except docker.errors.APIError as exc:
            raise SandboxError(f"{command[0]} in the database container: {exc}") from None
        if code != 0:
            raise SandboxError(
                f"{command[0]} failed with code {code}",
                last_lines(errors.decode(errors="replace"), 5),
            )
        return output.decode(errors="replace")

    def _put(self, inside: str, data: bytes) -> None:
        """`data` as the file `inside` of the database container, readable by whichever
        account the image runs its programs as (only the server and the gate run there)."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            member = tarfile.TarInfo(os.path.basename(inside))
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
        assert self._database is not None
        wrapped = self._database.get_wrapped_container()
        try:
            wrapped.put_archive(os.path.dirname(inside), archive.getvalue())
        except docker.errors.APIError as exc:
            raise SandboxError(f"copying into the database container: {exc}") from None

    # --- logs -------------------------------------------------------------------------------

    def log_mark(self, source: LogSource) -> int:
        return self._logs[source].mark()

    def logs(self, source: LogSource, since: int = 0) -> str:
        return self._logs[source].text(since)

    # --- teardown ---------------------------------------------------------------------------

    def _teardown_steps(self) -> tuple[Callable[[], None], ...]:
        # The sweep of the run's own label comes after the recorded containers and catches
        # anything created but not yet recorded when an interrupt came.
        return (
            self._close_relays,
            self._remove_services,
            self._remove_database,
            self._remove_holder,
            self._remove_labelled,
            self._remove_volume,
            self._remove_network,
            self._close_client,
        )

    def _close_relays(self) -> None:
        while self._relays:
            self._relays.popitem()[1].close()

    def _remove_holder(self) -> None:
        holder, self._holder = self._holder, None
        self.netns = None
        if holder is not None:
            _remove(holder)

    def _remove_services(self) -> None:
        while self._services:
            _discard(self._services.pop())

    def _remove_database(self) -> None:
        container, self._database = self._database, None
        if container is not None:
            wrapped = container.get_wrapped_container()
            self._logs["database"].end(wrapped)
            _discard(container)

    def _remove_volume(self) -> None:
        volume, self._volume = self._volume, None
        if volume is not None:
            with suppress(docker.errors.APIError):  # NotFound: removed by its label already
                volume.remove(force=True)
        self.database_url = self.app_database_url = self._gate_app_url = ""

    def _remove_network(self) -> None:
        network, self._network = self._network, None
        if network is not None:
            with suppress(docker.errors.APIError):  # NotFound: removed by its label already
                network.remove()
            network._docker.client.close()

    def _remove_labelled(self) -> None:
        if self._client is None:
            return
        remove_run(self._client, self.run_id)

    def _close_client(self) -> None:
        client, self._client = self._client, None
        self._started = False
        if client is not None:
            client.close()

    # --- helpers ----------------------------------------------------------------------------

    def _require_client(self) -> docker.DockerClient:
        if self._client is None:
            raise SandboxError("the sandbox is not running")
        return self._client

    def _expand(self, values: Mapping[str, str], where: str) -> dict[str, str]:
        return {
            key: expand(value, self.environ, f"{self.source}: {where}.{key}")
            for key, value in values.items()
        }

    def _container_kwargs(self, role: str, limits: ContainerLimits | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"labels": {**self.labels, LABEL_ROLE: role}}
        kwargs.update(_limit_kwargs(limits or self.settings.limits))
        # network=None also keeps testcontainers from guessing a network of its own.
        if self.host_network:
            kwargs.update(network_mode="host", network=None)
        elif self.isolated:
            assert self._holder is not None
            kwargs.update(network_mode=f"container:{self._holder.id}", network=None)
        return kwargs

    def _relay(self, port: int) -> netns.Relay:
        """The gate's way to `port` in an isolated run's namespace: one relay per port, kept
        for the run (the API's port stays the same across its starts)."""
        relay = self._relays.get(port)
        if relay is None:
            assert self.netns is not None
            relay = self._relays[port] = netns.Relay(self.netns, port)
        return relay

    def _gate_port(self, container: DockerContainer, port: int) -> int:
        """The loopback port on the gate's side that reaches `port` of `container`."""
        if self.host_network:
            return port
        if self.isolated:
            return self._relay(port).port
        return _published(container, port)

    def _connect(self, container: DockerContainer, port: int) -> socket.socket:
        """A connection to `port` of `container`, straight (no relay: a relay accepts before
        the other side does)."""
        if self.isolated:
            assert self.netns is not None
            return netns.connect_inside(self.netns, port, timeout=1)
        return socket.create_connection((HOST, self._gate_port(container, port)), timeout=1)

    def _join_network(self, container: DockerContainer, alias: str) -> None:
        assert self._network is not None
        container.with_network(self._network).with_network_aliases(alias)

    def _start_container(self, container: DockerContainer, role: str, name: str) -> None:
        """Create, start and record at once: an interrupt in between would lose track of it
        (stop() would still find it by its label). The API's log gets a header per start,
        as in the local sandbox, so a reader sees which start wrote what."""
        with signals_deferred():
            at = time.time_ns()
            try:
                container.start()
            except docker.errors.APIError as exc:
                # E.g. the image's command does not exist: for the API that is the image's
                # fault like any other failure to start, for the database the policy's.
                error = {"api": ApiStartError, "database": DatabaseStartError}.get(
                    role, SandboxError
                )
                reason = _first_line(exc.explanation or str(exc))
                raise error(f"the {role} container '{name}' did not start: {reason}") from None
            wrapped = container.get_wrapped_container()
            if role == "api":
                header = f"=== gatekeeper: start {name} (container {wrapped.short_id}) ===\n"
                self._logs["api"].begin(wrapped, header, at)
            elif role == "database":
                self._logs["database"].begin(wrapped, "", at)


class _Log:
    """One log source over the run: the lines of finished containers (kept), then the running
    one's, read from the engine.

    A position is a time (ns since the epoch) and a read returns the lines the engine stamped
    at or after it. Byte offsets, as in the local sandbox, would cost a full read of the log
    for every mark, and the check suites take two marks per step; a time costs nothing. Lines
    reach the engine a moment after the container writes them, so a read first waits until
    nothing written before it can still be on its way (_LOG_SETTLE)."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, bytes]] = []
        self.live: Container | None = None

    def begin(self, container: Container, header: str, at: int) -> None:
        if self.live is not None:
            self.end(self.live)
        if header:
            self.kept.append((at, header.encode()))
        self.live = container

    def end(self, container: Container) -> None:
        """`container` has stopped: keep its lines, for reads after it is removed."""
        if container is not self.live:
            return
        self.kept.extend(_entries(container, 0))
        self.live = None

    def mark(self) -> int:
        return time.time_ns()

    def text(self, since: int = 0) -> str:
        entries = [line for stamp, line in self.kept if stamp >= since]
        if self.live is not None:
            entries += [line for _, line in _settled_entries(self.live, since)]
        return b"".join(entries).decode(errors="replace")


def sweep(
    client: docker.DockerClient,
    *,
    older_than: float,
    images_older_than: float,
    keep_run: str | None = None,
) -> list[str]:
    """Remove what crashed runs left behind: containers, networks and volumes labelled with a
    run id other than `keep_run`, either made on this machine by a process that is gone, or
    older than `older_than` seconds (runs elsewhere may still be going); and cached API images
    older than `images_older_than`."""
    now = time.time()
    removed: list[str] = []
    host = socket.gethostname()

    def stale(labels: Mapping[str, str] | None, limit: float) -> bool:
        labels = labels or {}
        if keep_run is not None and labels.get(LABEL_RUN) == keep_run:
            return False
        if labels.get(LABEL_HOST) == host and not _alive(labels.get(LABEL_PID, "")):
            return True
        try:
            created = float(labels.get(LABEL_CREATED, "0"))
        except ValueError:
            created = 0.0
        return now - created > limit

    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        if stale(container.labels, older_than):
            _remove(container)
            removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": LABEL_RUN}):
        if stale(network.attrs.get("Labels"), older_than):
            with suppress(docker.errors.NotFound, docker.errors.APIError):
                network.remove()
                removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters={"label": LABEL_RUN}):
        if stale(volume.attrs.get("Labels"), older_than):
            with suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
    for image in client.images.list(filters={"label": LABEL_CONTEXT}):
        if stale({LABEL_CREATED: image.labels.get(LABEL_CREATED, "0")}, images_older_than):
            # In use by a container of a run still going: the engine refuses, and that is right.
            with suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(image.id, force=False)
                removed.append(f"image {', '.join(image.tags) or image.short_id}")
    if removed:
        log.info("swept leftovers of earlier runs: %s", ", ".join(removed))
    return removed


def creator_alive(labels: Mapping[str, str] | None) -> bool:
    """Whether the process that made an object (by its labels) still runs, as far as this
    machine can tell: objects from other machines count as alive."""
    labels = labels or {}
    return labels.get(LABEL_HOST) != socket.gethostname() or _alive(labels.get(LABEL_PID, ""))


def _namespace(container: Container) -> Path:
    """The network namespace of a running container, as this machine's /proc names it.

    The engine gives the pid as its own pid namespace sees it: a gate in another one (a
    container beside the engine) would find some other process under that number, maybe one
    on the host's network. So the pid's cgroup must name the container."""
    pid = int(container.attrs.get("State", {}).get("Pid") or 0)
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text() if pid > 0 else ""
    except OSError:
        cgroups = ""
    if container.id not in cgroups:
        raise SandboxError(
            f"the process of container {container.name} (pid {pid} to the engine) is not "
            "this machine's: Gatekeeper runs in a pid namespace other than the engine's, so "
            "it cannot enter the run's network namespace; use containers.network: ports or host"
        )
    return Path(f"/proc/{pid}/ns/net")


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # unknown: leave it to the age threshold
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_run(client: docker.DockerClient, run_id: str) -> None:
    """Remove every container, network and volume labelled with `run_id`."""
    selector = {"label": f"{LABEL_RUN}={run_id}"}
    for container in client.containers.list(all=True, filters=selector):
        _remove(container)
    for network in client.networks.list(filters=selector):
        with suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()
    for volume in client.volumes.list(filters=selector):
        with suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)


class _PortTaken(Exception):
    """Someone took the loopback port we chose (host networking); `error` if we give up."""

    def __init__(self, error: SandboxError):
        super().__init__(str(error))
        self.error = error


def _on_free_port(start: Callable[[int], T]) -> T:
    """Run `start` on a free port, again on another one if that port is taken meanwhile."""
    for _ in range(_PORT_ATTEMPTS - 1):
        with suppress(_PortTaken):
            return start(_free_port())
    try:
        return start(_free_port())
    except _PortTaken as taken:
        raise taken.error from None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _published(container: DockerContainer | None, port: int) -> int:
    """The loopback port the engine published `port` of `container` on."""
    assert container is not None
    wrapped = container.get_wrapped_container()
    for _ in range(50):
        wrapped.reload()
        bindings = (wrapped.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        if wrapped.status in ("exited", "dead"):
            break
        time.sleep(_POLL)
    raise SandboxError(f"the engine published no host port for port {port} of {wrapped.name}")


def _listening(connect: Callable[[], socket.socket]) -> str | None:
    """None when something serves where `connect` connects, else what went wrong.

    A published port accepts connections before the service behind it listens (the engine's
    proxy does), then closes them at once; a real server keeps the connection open or greets.
    So a connection that ends within a moment without a byte does not count."""
    try:
        with connect() as connection:
            connection.settimeout(0.2)
            try:
                if connection.recv(1) == b"":
                    return "closed at once"
            except TimeoutError:
                pass  # open and silent: waiting for the client to speak, like most servers
            except OSError as exc:
                return exc.strerror or str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _accepts(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _limit_kwargs(limits: ContainerLimits) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if limits.cpus is not None:
        kwargs["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.memory is not None:
        # The same value for memory and memory+swap: over the limit means killed, not swapped.
        kwargs["mem_limit"] = limits.memory
        kwargs["memswap_limit"] = limits.memory
    if limits.pids is not None:
        kwargs["pids_limit"] = limits.pids
    return kwargs


def _oom(container: Container) -> str:
    state = container.attrs.get("State", {})
    if state.get("OOMKilled"):
        limit = container.attrs.get("HostConfig", {}).get("Memory") or 0
        size = f" of {limit // (1024 * 1024)} MiB" if limit else ""
        return f" (killed: it exceeded its memory limit{size}, the policy's containers limits)"
    return ""


def _container_logs(container: Container) -> bytes:
    try:
        return container.logs(stdout=True, stderr=True)
    except docker.errors.NotFound:
        return b""


def _entries(container: Container, since: int) -> list[tuple[int, bytes]]:
    """The container's log lines stamped at or after `since` (ns), with their stamps."""
    # The engine's filter works in seconds; a millisecond early, and the exact cut here.
    window = {"since": since / 1e9 - 0.001} if since > 0 else {}
    try:
        raw = container.logs(stdout=True, stderr=True, timestamps=True, **window)
    except docker.errors.NotFound:
        return []
    entries: list[tuple[int, bytes]] = []
    for line in raw.splitlines(keepends=True):
        stamp, _, text = line.partition(b" ")
        at = _nanoseconds(stamp)
        if at is None:  # not a stamp: the rest of a long line the engine split
            if entries:
                entries[-1] = (entries[-1][0], entries[-1][1] + line)
            continue
        if at >= since:
            entries.append((at, text))
    return entries


def _settled_entries(container: Container, since: int) -> list[tuple[int, bytes]]:
    """Lines since `since`, read once nothing written before this call can still be on its
    way to the engine (_LOG_SETTLE)."""
    time.sleep(_LOG_SETTLE)
    return _entries(container, since)


def _nanoseconds(stamp: bytes) -> int | None:
    """RFC 3339 with nanoseconds, as the engine stamps lines: 2026-11-25T09:33:41.123456789Z."""
    try:
        text = stamp.decode("ascii")
        whole, _, fraction = text.rstrip("Z").partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except (UnicodeDecodeError, ValueError):
        return None
    digits = (fraction + "000000000")[:9] if fraction.isdigit() else "0"
    return seconds * 1_000_000_000 + int(digits)


def _container_tail(container: Container) -> str:
    return last_lines(_container_logs(container).decode(errors="replace"))


def _remove(container: Container) -> None:
    with suppress(docker.errors.APIError):  # NotFound included: already gone is fine
        container.remove(force=True, v=True)


def _discard(container: DockerContainer) -> None:
    """Remove the container and close the engine connection testcontainers opened for it (a
    long-running service would otherwise collect one per container)."""
    _remove(container.get_wrapped_container())
    container.get_docker_client().client.close()


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]


def _safe(run_id: str) -> str:
    """Container and volume names allow [a-zA-Z0-9_.-]."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:40]

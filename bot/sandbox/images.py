"""Images for the containers sandbox: the engine connection, the API image built from a
checkout's Dockerfile (cached by the content of its build context), and the images a policy
names (present locally, or pulled where a registry can be reached).

Why a cache keyed by content: the pipeline starts the API three times per run (base, head,
head again) and CI validates the same base over and over. An unchanged Dockerfile and context
must not rebuild; anything that changes what the build would see must. So the key covers
every file the build context sends (after `.dockerignore`), the Dockerfile, the target and
build arguments, and the ids of the images the Dockerfile starts FROM (a rebuilt base image
invalidates its children).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.utils.build import create_archive, exclude_paths

from bot.resources import data_path
from bot.sandbox.base import BuildFailed, EngineUnavailable, SandboxError

LABEL_RUN = "gatekeeper.run"
LABEL_CREATED = "gatekeeper.created"
LABEL_ROLE = "gatekeeper.role"
LABEL_HOST = "gatekeeper.host"  # the machine and process that created it: a sweep on the same
LABEL_PID = "gatekeeper.pid"  # machine removes it as soon as that process is gone
LABEL_CONTEXT = "gatekeeper.context"
CACHE_REPOSITORY = "gatekeeper/api-cache"
_TAIL_LINES = 40
_ENGINE_TIMEOUT = 120  # seconds per engine request: creating a container on a busy disk is slow
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I | re.M)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.I | re.M)
# What the gate itself leaves in a checkout and no deployment builds from: Python's bytecode
# caches (the migrations, seed and build commands run on the host, and each .pyc holds its
# source's mtime, new with every checkout) and the checkout's `.git` (a worktree's pointer to
# this run's scratch directory). Either would give every run a new key, so an unchanged
# context would rebuild each time, as it did for items-api (10 s per image, two per run).
_RUN_LEFTOVERS = re.compile(r"^\.git(/|$)|(^|/)__pycache__(/|$)")


def prepare_script() -> Path:
    """The script that installs and starts an engine and builds the local images."""
    return data_path("examples") / "containers" / "prepare.sh"


def start_hint() -> str:
    """The command to give people whose machine has no running engine."""
    return (
        f"start one with `sudo bash {prepare_script()}` (installs docker.io if needed and runs "
        "`dockerd --iptables=false --bridge=none` in the background, then builds the local "
        "images), or `sudo systemctl start docker` where Docker is installed as a service"
    )


def connect() -> docker.DockerClient:
    """A client for the engine DOCKER_HOST (or the default socket) names, known to answer.

    Raises EngineUnavailable with the command that would start one: without an engine the
    containers sandbox can do nothing, and the person reading the error should not have to
    guess why.
    """
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=_ENGINE_TIMEOUT)
        client.ping()
    except docker.errors.DockerException as exc:
        reason = _first_line(str(exc))
        raise EngineUnavailable(
            f"no container engine answers at {where} ({reason}); {start_hint()}"
        ) from None
    return client


def engine_problem(required: tuple[str, ...] = ()) -> str | None:
    """Why the containers sandbox cannot run here (no engine, or an image missing), or None.

    For tests and benchmarks that skip with a reason rather than fail on such machines."""
    try:
        client = connect()
    except EngineUnavailable as exc:
        return str(exc)
    try:
        missing = [image for image in required if not client.images.list(name=image)]
    finally:
        client.close()
    if missing:
        return (
            f"the engine lacks the image(s) {', '.join(missing)}; build them with "
            f"`sudo bash {prepare_script()}`"
        )
    return None


LOCAL_IMAGES = ("gatekeeper/postgres:15", "gatekeeper/python:3.11")  # what prepare.sh builds


def ensure_image(client: docker.DockerClient, reference: str, what: str) -> None:
    """Make sure `reference` is on the engine: present, or pulled. A failure is the gate's."""
    try:
        client.images.get(reference)
        return
    except docker.errors.ImageNotFound:
        pass
    repository, tag = _split_reference(reference)
    try:
        client.images.pull(repository, tag=tag)
    except docker.errors.APIError as exc:
        raise SandboxError(
            f"the {what} image {reference} is not on the engine and could not be pulled "
            f"({_first_line(exc.explanation or str(exc))}). Without a registry, build the "
            f"local images with `sudo bash {prepare_script()}`, or name an image the engine "
            "has (`docker images`)."
        ) from None


@dataclass(frozen=True)
class BuildRequest:
    """What to build: the checkout's directory and the policy's containers.api settings."""

    workdir: Path  # the directory start_api was given: checkout / api.workdir
    name: str  # base, head, ... (for messages and BuildFailed)
    context: str = "."
    dockerfile: str = "Dockerfile"
    target: str | None = None
    build_args: Mapping[str, str] | None = None
    network_mode: str | None = None  # "none", or "host" with build.network
    timeout: float = 600.0
    nocache: bool = False  # also skip the engine's layer cache: a cold build (benchmarks)


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    key: str
    cached: bool
    seconds: float
    log: str


class _Context:
    """The files a build would send, as docker-py selects them, and their content hash."""

    def __init__(self, request: BuildRequest):
        self.root = (request.workdir / request.context).resolve()
        self.dockerfile = request.dockerfile
        if not self.root.is_dir():
            raise BuildFailed(
                f"the build context {self.root} of API '{request.name}' is not a directory "
                "(containers.api.context)",
                workdir=request.workdir,
                name=request.name,
            )
        path = (self.root / request.dockerfile).resolve()
        if not path.is_file() or not path.is_relative_to(self.root):
            raise BuildFailed(
                f"no Dockerfile at {request.dockerfile} in the build context {self.root} of API "
                f"'{request.name}' (containers.api.dockerfile, relative to the context)",
                workdir=request.workdir,
                name=request.name,
            )
        self.dockerfile_text = path.read_text(encoding="utf-8", errors="replace")
        patterns = _dockerignore(self.root)
        sent = exclude_paths(str(self.root), patterns, dockerfile=request.dockerfile)
        self.files = sorted(path for path in sent if not _RUN_LEFTOVERS.search(path))

    def digest(self) -> hashlib._Hash:
        digest = hashlib.sha256()
        for relative in self.files:
            full = self.root / relative
            info = full.lstat()
            digest.update(f"{relative}\0{stat.S_IMODE(info.st_mode) & 0o111:o}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(b"L" + os.readlink(full).encode())
            elif stat.S_ISREG(info.st_mode):
                digest.update(b"F%d\0" % info.st_size)
                with open(full, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            else:
                digest.update(b"D")
        return digest

    def archive(self) -> io.BufferedIOBase:
        return create_archive(str(self.root), files=self.files)


def build_api_image(
    client: docker.DockerClient, request: BuildRequest, labels: Mapping[str, str]
) -> BuiltImage:
    """The API image for `request`: from the cache when its key matches, else built now.

    Raises BuildFailed (the Dockerfile's fault) with the build log's tail, and SandboxError
    when an image it starts FROM is missing and cannot be pulled (the machine's fault).
    """
    started = time.monotonic()
    context = _Context(request)
    build_args = dict(request.build_args or {})
    digest = context.digest()
    digest.update(f"\0{request.dockerfile}\0{request.target}\0".encode())
    for name, value in sorted(build_args.items()):
        digest.update(f"{name}={value}\0".encode())
    for parent in _parents(context.dockerfile_text, build_args):
        ensure_image(client, parent, "base")
        digest.update(f"{parent}@{client.images.get(parent).id}\0".encode())
    key = digest.hexdigest()
    reference = f"{CACHE_REPOSITORY}:{key[:24]}"
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        pass
    else:
        if not request.nocache:
            return BuiltImage(reference, key, True, time.monotonic() - started, "")
    log = _build(client, context, request, reference, {**labels, LABEL_CONTEXT: key}, build_args)
    return BuiltImage(reference, key, False, time.monotonic() - started, log)


def _build(
    client: docker.DockerClient,
    context: _Context,
    request: BuildRequest,
    reference: str,
    labels: Mapping[str, str],
    build_args: dict[str, str],
) -> str:
    """Run the build on its own connection, so that a timeout or Ctrl-C can cut it: closing the
    connection makes the engine cancel the build and remove its intermediate containers."""
    # A RUN step may print nothing for minutes: reads wait as long as the whole build may.
    api = docker.from_env(version=client.api.api_version, timeout=int(request.timeout) + 30).api
    lines: list[str] = []
    outcome: dict[str, Any] = {}
    archive = context.archive()

    def consume() -> None:
        try:
            stream = api.build(
                fileobj=archive,
                custom_context=True,
                dockerfile=request.dockerfile,
                tag=reference,
                target=request.target,
                buildargs=build_args or None,
                labels=dict(labels),
                network_mode=request.network_mode,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=request.nocache,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    lines.append(chunk["stream"])
                elif "error" in chunk:
                    outcome["error"] = chunk["error"]
                    lines.append(chunk["error"] + "\n")
        except Exception as exc:  # reported on the caller's thread
            outcome.setdefault("exception", exc)

    worker = threading.Thread(target=consume, name=f"build {request.name}", daemon=True)
    worker.start()
    timed_out = False
    try:
        worker.join(request.timeout)
        timed_out = worker.is_alive()
    finally:
        if worker.is_alive():
            api.close()  # the timeout, or Ctrl-C while waiting: cancel the build
            worker.join(10)
        api.close()
        archive.close()
    log = "".join(lines)
    tail = _tail(log)
    if timed_out:
        raise BuildFailed(
            f"the image of API '{request.name}' did not build within "
            f"{request.timeout:g}s (containers.api.build_timeout)",
            tail,
            workdir=request.workdir,
            name=request.name,
        )
    if "error" in outcome:
        raise BuildFailed(
            f"the image of API '{request.name}' does not build: {_first_line(outcome['error'])}",
            tail,
            workdir=request.workdir,
            name=request.name,
        )
    if "exception" in outcome:
        exc = outcome["exception"]
        if isinstance(exc, docker.errors.APIError) and exc.is_client_error():
            # The engine refused the request itself: a Dockerfile it cannot parse, a target
            # that does not exist. Still the Dockerfile's fault.
            raise BuildFailed(
                f"the image of API '{request.name}' does not build: "
                f"{_first_line(exc.explanation or str(exc))}",
                tail,
                workdir=request.workdir,
                name=request.name,
            )
        raise SandboxError(f"the engine failed while building API '{request.name}': {exc}", tail)
    return log


def _parents(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """Images the Dockerfile starts FROM, with ARG defaults and build args substituted.

    Only ARGs declared before the first FROM can appear in a FROM line. Stages that start from
    an earlier stage, `scratch`, and references still holding a variable are left out: the
    build itself settles those.
    """
    froms = list(_FROM.finditer(dockerfile))
    if not froms:
        return []
    args = {m.group(1): m.group(2) or "" for m in _ARG.finditer(dockerfile[: froms[0].start()])}
    args.update(build_args)
    stages: set[str] = set()
    parents: list[str] = []
    for match in froms:
        image = re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
            lambda m: args.get(m.group(1), m.group(0)),
            match.group(1),
        )
        if image.lower() not in stages and image != "scratch" and "$" not in image:
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                image += ":latest"
            if image not in parents:
                parents.append(image)
        if match.group(2):
            stages.add(match.group(2).lower())
    return parents


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _split_reference(reference: str) -> tuple[str, str]:
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, digest
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]

"""Network namespaces: the change's code reaches its database and nothing else.

Inside one there is only a loopback interface: the sandbox's PostgreSQL listens there, the API
under test listens there, and every other address — the internet, the host's other services,
the cloud metadata address 169.254.169.254 — is unreachable (ENETUNREACH at once, no
timeout). The gate itself stays outside: it reaches the local sandbox's PostgreSQL through its
unix socket (a file, which namespaces do not separate), and anything else through a `Relay`,
a loopback port on the host side whose connections are opened from inside the namespace.

Everything here takes the namespace as a path, whoever made it:
- the local sandbox's, one per run slot, made with iproute2's `ip netns` (`ensure`, named
  `gatekeeper-<slot>`, kept for the next run of the slot; without `ip` the run's network is
  not isolated and the report says so);
- the containers sandbox's, one per run, held by a container started with no network
  (`/proc/<its pid>/ns/net`).
Entering one (setns here, `nsenter` for commands) needs root: `enter_problem` says why not.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from contextlib import suppress
from pathlib import Path

from bot.sandbox.base import SandboxError

HOST = "127.0.0.1"
_CLONE_NEWNET = 0x40000000
_RUN_DIR = Path("/run/netns")
_CONNECT_TIMEOUT = 5.0
_CHUNK = 65536


def available() -> bool:
    return shutil.which("ip") is not None


def enter_problem() -> str | None:
    """Why this process cannot enter another network namespace and start commands there,
    or None when it can."""
    if os.geteuid() != 0:
        return "entering a network namespace needs root"
    if shutil.which("nsenter") is None:
        return "util-linux's `nsenter` not found"
    return None


def ensure(name: str) -> Path:
    """The namespace `name` with its loopback up; created on first use."""
    path = _RUN_DIR / name
    if not path.exists():
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    return path


def connect_inside(namespace: Path, port: int, timeout: float = _CONNECT_TIMEOUT) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` inside `namespace`.

    setns changes the namespace of the calling thread only, so a thread of its own enters it,
    connects and ends; the socket keeps the namespace it was made in."""
    result: dict[str, socket.socket | BaseException] = {}

    def inside() -> None:
        try:
            _enter(namespace)
            result["socket"] = socket.create_connection((HOST, port), timeout=timeout)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=inside, name="gatekeeper-netns-connect")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    connection = result["socket"]
    assert isinstance(connection, socket.socket)
    connection.settimeout(None)
    return connection


class Relay:
    """127.0.0.1:`port` on the gate's side, forwarded to 127.0.0.1:`target` in `namespace`.

    A connection the inner side refuses (the API is not listening yet) is closed at once, as
    a refused connection would be: health checks retry as they would anyway."""

    def __init__(self, namespace: Path, target: int):
        self.namespace, self.target = namespace, target
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="gatekeeper-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = connect_inside(self.namespace, self.target)
        except OSError:
            client.close()
            return
        # A relay forwards what it gets at once: Nagle's algorithm would hold a request's
        # tail until the previous segment's (delayed) ACK, 40 ms a request.
        for each in (client, upstream):
            each.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._open.update((client, upstream))
        pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        pump.start()
        _pump(client, upstream)
        pump.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        self._listener.close()
        for each in sockets:
            with suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then tell `sink` no more is coming."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _enter(namespace: Path) -> None:
    fd = os.open(namespace, os.O_RDONLY)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12 and later
        if setns is not None:
            setns(fd, _CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns {namespace}: {os.strerror(error)}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise SandboxError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")

"""The run's network namespace: loopback only inside, reached from outside through a relay."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from bot.sandbox import netns
from tests.helpers import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not netns.available(), reason="network namespaces need root and ip"
)
NAME = f"gatekeeper-test-{os.getpid()}"


@pytest.fixture
def namespace():
    path = netns.ensure(NAME)
    yield path
    subprocess.run(["ip", "netns", "delete", NAME], check=True)


def test_a_server_inside_is_reached_through_the_relay_and_nothing_else(namespace, tmp_path):
    (tmp_path / "hello.txt").write_text("inside\n")
    port = free_port()  # free on the host: the one answering inside is not the host's
    relay = netns.Relay(namespace, port)
    try:
        # Nothing listens inside yet: the relay closes the connection, as a refusal would.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{relay.port}/hello.txt", timeout=5)
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        server = subprocess.Popen(
            ["nsenter", f"--net={namespace}", *command],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{relay.port}/hello.txt", timeout=5)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server inside never answered"
                    time.sleep(0.1)
            assert answer.text == "inside\n"
            # The same port on the host's own loopback is not the server inside.
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/hello.txt", timeout=5)
        finally:
            server.kill()
            server.wait()
    finally:
        relay.close()


def test_inside_only_loopback_exists_and_no_address_beyond_is_reachable(namespace):
    probe = (
        "import socket; print(','.join(n for _, n in socket.if_nameindex())); "
        "print(socket.socket().connect_ex(('169.254.169.254', 80)))"
    )
    out = subprocess.run(
        ["nsenter", f"--net={namespace}", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["lo", "101"]  # ENETUNREACH: no route, no packet sent

"""Git's smart HTTP protocol for the fake GitHub, by running ``git http-backend`` as CGI.

The bot clones with ``git clone http://x-access-token:<token>@host/owner/repo.git`` like it
would against github.com; serving real git (instead of copying directories behind the bot's
back) exercises its URL building, its credential handling and git's own protocol negotiation.
The CGI process's output (the pack) is streamed to the client as it is produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


class GitProjectRoot:
    """A directory of ``owner/repo.git`` symlinks to the registered repositories' git dirs.

    ``git http-backend`` serves whatever lies under GIT_PROJECT_ROOT; linking (rather than
    copying) keeps the served repository the very one the test commits to and that the API
    reads, including the refs/pull/N/* refs the fake creates.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def link(self, full_name: str, git_dir: Path) -> None:
        owner, name = full_name.split("/", 1)
        target = self.root / owner / f"{name}.git"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(git_dir, target_is_directory=True)


async def run_http_backend(request: Request, root: Path, path_info: str) -> Response:
    """Answer one smart-HTTP request (info/refs or git-upload-pack) through git http-backend."""
    # The request body is read completely before the response starts: Starlette's
    # StreamingResponse listens on the same ASGI ``receive`` channel for a disconnect and would
    # swallow body messages that a concurrent reader had not taken yet. Git's requests are
    # small (wants and haves); the answer (the pack) is what gets streamed.
    request_body = await request.body()

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
        "REMOTE_USER": "x-access-token",
    }
    if request.method == "POST":
        env["CONTENT_LENGTH"] = str(len(request_body))
    for name, value in request.headers.items():
        # CGI passes request headers as HTTP_*; git reads HTTP_CONTENT_ENCODING (gzip bodies)
        # and HTTP_GIT_PROTOCOL (protocol v2) from there.
        env["HTTP_" + name.upper().replace("-", "_")] = value
    if "git-protocol" in request.headers:
        env["GIT_PROTOCOL"] = request.headers["git-protocol"]

    process = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdin and process.stdout and process.stderr

    async def feed() -> None:
        # http-backend may exit without reading stdin (info/refs): a closed pipe is fine.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if request_body:
                process.stdin.write(request_body)
                await process.stdin.drain()
            process.stdin.close()

    feeder = asyncio.create_task(feed())
    errors = asyncio.create_task(process.stderr.read())

    status = 200
    headers: dict[str, str] = {}
    while True:
        line = await process.stdout.readline()
        if not line or line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await process.stdout.read(65536):
                yield chunk
        finally:
            await feeder
            await process.wait()
            stderr = await errors
            if process.returncode not in (0, None) and stderr:
                # Surfaces in the pytest log next to the failing clone.
                print(f"git http-backend ({path_info}): {stderr.decode(errors='replace')}")

    media_type = headers.pop("Content-Type", None)
    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media_type)

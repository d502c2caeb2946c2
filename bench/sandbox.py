"""Benchmark: the local sandbox against the containers sandbox.

Why: the containers sandbox is the faithful one (the PR's Dockerfile, PostgreSQL from an
image), the local one the fast default. Choosing between them needs their price: how long
until the database accepts connections and the demo API answers its health URL, with and
without a cached API image, and how long the whole demo takes in each mode.

    .venv/bin/python bench/sandbox.py [--runs N] [--no-demo]

Time to ready = `start()` (PostgreSQL up, database created) + `start_api()` on the demo's
`main` checkout, until the health URL answers, then both are stopped (not timed). For the
containers sandbox, *cold* builds the API image with neither Gatekeeper's image cache nor the
engine's layer cache, *warm* finds it cached (an unchanged Dockerfile and context). The local
sandbox has nothing to build: its first run in a process is reported as its cold one. The
whole demo (five cases) runs once in each mode, in process, as `gatekeeper demo` does.

It prints the median (and min, max) of each, and the ratios containers / local. It needs the
engine and images of examples/containers/prepare.sh; without them it measures the local
sandbox only and says why. A measurement, not a test: exit 0 whatever the ratio, 1 when a run
failed, 130 when interrupted (sandboxes are removed in every case).
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.cli import demo  # noqa: E402
from bot.policy import api_env, load_policy  # noqa: E402
from bot.sandbox import images  # noqa: E402
from bot.sandbox.base import ApiSpec, Sandbox  # noqa: E402
from bot.sandbox.containers import ContainersSandbox  # noqa: E402
from bot.sandbox.local import LocalSandbox, raise_keyboard_interrupt_on_sigterm  # noqa: E402

POLICY = ROOT / "policies" / "sessions-api.yml"


def time_to_ready(make: Callable[[], Sandbox], workdir: Path, spec: ApiSpec) -> float:
    """Seconds from nothing to a database and an API answering its health URL."""
    sandbox = make()
    started = time.perf_counter()
    try:
        sandbox.start()
        sandbox.start_api(workdir, spec, "base")
        return time.perf_counter() - started
    finally:
        sandbox.stop()


def whole_demo(kind: str) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gatekeeper-bench-") as out:
        quiet = Console(file=io.StringIO())
        code = demo.run(
            Path(out), as_json=False, console=quiet, sandbox=kind, targets=("sessions-api",)
        )
    if code != 0:
        raise RuntimeError(f"the demo with the {kind} sandbox did not decide as expected")
    return time.perf_counter() - started


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:7.2f} s"
    return (
        f"{statistics.median(values):7.2f} s  (min {min(values):.2f}, max {max(values):.2f}, "
        f"n={len(values)})"
    )


def ratio(containers: list[float], local: list[float]) -> str:
    return f"{statistics.median(containers) / statistics.median(local):5.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each time-to-ready case")
    parser.add_argument("--no-demo", action="store_true", help="skip the whole-demo runs")
    args = parser.parse_args()
    raise_keyboard_interrupt_on_sigterm()
    os.environ.setdefault(demo.SECRET_ENV, secrets.token_urlsafe(32))
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    loaded = load_policy(POLICY)
    policy = loaded.policy
    assert policy.api is not None
    spec = ApiSpec(
        command=policy.api.command,
        env=api_env(loaded),
        port_env=policy.api.port_env,
        database_url_env=policy.api.database_url_env,
        health_path=policy.api.health_path,
        start_timeout=policy.api.start_timeout,
    )
    problem = images.engine_problem(images.LOCAL_IMAGES)
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gatekeeper-bench-") as tmp:
            repo = Path(tmp) / "sessions-api"
            demo.load_builder().build(repo)  # leaves main checked out

            def local() -> Sandbox:
                return LocalSandbox(database=policy.database.name)

            def containers(nocache: bool) -> Callable[[], Sandbox]:
                return lambda: ContainersSandbox(
                    policy.containers, database=policy.database.name, nocache=nocache
                )

            print("time to ready: local ...", file=sys.stderr)
            results["local cold"] = [time_to_ready(local, repo, spec)]
            results["local warm"] = [time_to_ready(local, repo, spec) for _ in range(args.runs)]
            if problem is None:
                print("time to ready: containers ...", file=sys.stderr)
                results["containers cold"] = [
                    time_to_ready(containers(True), repo, spec) for _ in range(args.runs)
                ]
                results["containers warm"] = [
                    time_to_ready(containers(False), repo, spec) for _ in range(args.runs)
                ]
        if not args.no_demo:
            print("whole demo: local ...", file=sys.stderr)
            results["demo local"] = [whole_demo("local")]
            if problem is None:
                print("whole demo: containers ...", file=sys.stderr)
                results["demo containers"] = [whole_demo("containers")]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"a run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    print("\nsandbox benchmark (demo API, policies/sessions-api.yml)")
    for name, values in results.items():
        print(f"  {name:<18} {summary(values)}")
    if problem is not None:
        print(f"\ncontainers sandbox not measured: {problem}")
        return 0
    print("\nratios, containers / local (medians)")
    print(f"  ready, cold        {ratio(results['containers cold'], results['local cold'])}")
    print(f"  ready, warm        {ratio(results['containers warm'], results['local warm'])}")
    cold, warm = results["containers cold"], results["containers warm"]
    print(f"  containers cold / warm  {statistics.median(cold) / statistics.median(warm):5.1f}x")
    if "demo containers" in results:
        print(f"  whole demo         {ratio(results['demo containers'], results['demo local'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

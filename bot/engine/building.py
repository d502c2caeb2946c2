"""The builds: each side's `build.commands` (or a cached build), side by side.

Part of the run (bot/engine/pipeline.py): a base that does not build is the gate's error (no
baseline), a merge result that does not build is the change's reject.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bot.engine.state import Aborted, Infrastructure, RunState, tail
from bot.sandbox import shell
from bot.sandbox.buildcache import BuildCache


class Building(RunState):
    """The run's build stage."""

    def _build_both(self, base_dir: Path, head_dir: Path, suites) -> None:
        """Each side runs its migrations, seed and API in its own build: the merge result's
        failing is the change's (a reject), the base's an error (no baseline).

        The two are independent: they build side by side, unless they would build the same
        cached thing, when the base builds it and the merge result reuses it. A base kept by
        an earlier run of the batch is not built: only what it became is needed."""
        cache = BuildCache(self.policy.build)

        def build(workdir: Path, label: str) -> list[dict[str, Any]]:
            with self.stage(f"build {label}", within="build"):
                return self._build(workdir, label, cache)

        if self.restoring is not None:
            base_builds, builds = [], build(head_dir, "merge")
        elif cache.enabled and cache.key(base_dir) == cache.key(head_dir):
            base_builds = build(base_dir, "base")
            builds = build(head_dir, "merge") if _built(base_builds) else []
        else:
            with ThreadPoolExecutor(2, thread_name_prefix="gatekeeper-build") as pool:
                head = pool.submit(build, head_dir, "merge")
                try:
                    base_builds = build(base_dir, "base")
                    builds = head.result()
                except BaseException:
                    # Ctrl-C lands here: the pool must not wait out the other build.
                    self.confinement.kill_all()
                    shell.stop(self.building)
                    raise
        self.evidence["build"] = [*builds]
        self._base_built(base_builds)
        ok = _built(builds)
        failed = next((b for b in builds if b["exit"] != 0), None)
        self.criterion(
            "build",
            "the merge result builds",
            ok,
            (
                builds[0]["command"]
                if builds and builds[0].get("cached")
                else f"{len(builds)} command(s) ran"
            )
            if ok
            else f"`{failed['command']}` exited {failed['exit']}: "
            f"{shell.reason(failed['tail'])}\n{failed['tail']}",
            gate=True,
        )
        if not ok:
            self._skip_all(suites, "not run: the build failed")
            raise Aborted

    def _base_built(self, base_builds: list[dict[str, Any]]) -> None:
        """Records the base's builds; one that failed leaves no baseline: an error."""
        self.evidence["build"] += base_builds
        broken = next((b for b in base_builds if b["exit"] != 0), None)
        if broken:
            raise Infrastructure(
                f"the base branch does not build (`{broken['command']}` exited "
                f"{broken['exit']}): no baseline to compare against",
                broken["tail"],
            )

    def _build(self, workdir: Path, label: str, cache: BuildCache) -> list[dict[str, Any]]:
        """`build.commands` in `workdir`, or a cached build whose key files match
        (bot/sandbox/buildcache.py); only the base's builds are stored."""
        key = cache.key(workdir) if cache.enabled else ""
        if key and cache.restore(key, workdir):
            keyed = ", ".join(self.policy.build.cache_key)
            result = {
                "label": label,
                "command": f"reused the cached build {key[:12]} ({keyed} unchanged)",
                "exit": 0,
                "seconds": 0.0,
                "tail": "",
                "cached": True,
            }
            return [result]
        results = self._run_build(workdir, label)
        if key and label == "base" and all(r["exit"] == 0 for r in results):
            cache.store(key, workdir)
        return results

    def _run_build(self, workdir: Path, label: str) -> list[dict[str, Any]]:
        results = []
        budget_end = time.monotonic() + self.policy.build.timeout
        for command in self.policy.build.commands:
            start = time.monotonic()
            confined = self.confinement
            prefix = confined.networked if self.policy.build.network else confined.prefix
            remaining = budget_end - start
            result = shell.run(command, workdir, self.child_env, remaining, prefix, self.building)
            output = result.output
            if result.code is None:
                output += f"\n(timed out: build.timeout is {self.policy.build.timeout:.0f} s)"
            results.append(
                {
                    "label": label,
                    "command": command,
                    "exit": -1 if result.code is None else result.code,
                    "seconds": round(time.monotonic() - start, 3),
                    "tail": tail(output, 30),
                }
            )
            if result.code != 0:
                break
        return results


def _built(builds: list[dict[str, Any]]) -> bool:
    return all(b["exit"] == 0 for b in builds)

"""Benchmark: a merge group of 4 healthy fixes validated as one run, against each fix alone.

Why: a merge queue tests what lands, the queued fixes merged together. Issue 18 asks that a
group of 4 cost less than two separate runs: a gate that validates each pull request on its
own and then the group again must not be the only way to keep a queue safe, and a burst of
fixes must not take 4 runs' time to merge.

    .venv/bin/python bench/merge_group.py [--runs N]

The repository is the demo's sessions-api (examples/build_demo.py) with P1-SCHEMA-002 fixed:
its builder branch is the base here, so every regression guard passes. On it, four builder
branches each add one nullable column with an idempotent start-up migration, each at its own
place in app/db.py, so that they merge cleanly and are approved alone and together.

The group is `gatekeeper validate --head A --head B --head C --head D`: the batch the command
line merges in order, as the queue merges a group, validated as one run (the App validates the
queue's own merge commit the same way). A single is `gatekeeper validate --head A`. All run as
child processes timed by wall clock, with the demo's policy, so each pays its interpreter start.

One warm-up of the group and of each single, then N rounds (default 3) alternating the group
and the four singles, so drift in the machine's load hits both alike. It prints the median,
max and min of the group, of one single run and of the four singles' sum, the ratio of the
group to one single run (the issue's bound: under 2) and to the four (the high figure is
the max, or the p90 from 10 runs on, as bench/validate.py reports it). A measurement, not a
test: it exits 0 whatever the ratio, and 1 only when a run failed (did not approve).

    .venv/bin/python bench/merge_group.py --search [--runs N]

The culprit search of a rejected group instead: the third fix's migration is not idempotent
(a second start-up fails), so the group of 4 is rejected and the search validates the prefixes
and the culprit alone. Each round times that same search twice, in this process, on the same
Jobs: restoring the base the group's run kept (bot/engine/kept.py, what every edge does), and
making the base in every run (the floor: the search as it was before the kept base). It
prints both, their ratio, and checks that both name the same culprit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.validate import (
    ROOT,
    SECRET_ENV,
    TMP_PREFIX,
    RunFailed,
    load_example,
    run_child,
    summary,
)
from bot.engine.batch import Batch, failed, find_culprit
from bot.engine.job import BatchMember, Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import validate as pipeline
from bot.gitrepo import resolve
from bot.policy import load_policy
from bot.sandbox.select import factory

BOUND = 2.0  # the group against one single run
BASE = "builder/P1-SCHEMA-002"
POLICY = ROOT / "policies" / "sessions-api.yml"
DATE = "2024-06-03T12:00:00+00:00"
# (branch, the line of app/db.py it goes before, the migration): four places with unchanged
# lines between them, so that the four merge without a conflict.
FIXES = (
    (
        "builder/P2-TEMPLATES-010",
        '    """\n    CREATE TABLE IF NOT EXISTS agents (',
        "ALTER TABLE templates ADD COLUMN IF NOT EXISTS description TEXT",
    ),
    (
        "builder/P2-AGENTS-011",
        '    """\n    CREATE TABLE IF NOT EXISTS sessions (',
        "ALTER TABLE agents ADD COLUMN IF NOT EXISTS region TEXT",
    ),
    (
        "builder/P2-SESSIONS-012",
        "    # P1-SCHEMA-001: the agent code routes sessions by cluster.",
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS note TEXT",
    ),
    (
        "builder/P2-AGENTS-013",
        '    """\n    INSERT INTO agents (id, platform, status)',
        "ALTER TABLE agents ADD COLUMN IF NOT EXISTS zone TEXT",
    ),
)


def build(repo: Path, broken: int | None = None) -> list[str]:
    """The demo repository at `repo` with the four fixes on BASE; their branch names. The fix
    at index `broken` adds its column without IF NOT EXISTS: the second start-up fails."""
    example = load_example("build_demo.py")
    example.build(repo)
    shared = example.example_repo
    for index, (name, anchor, statement) in enumerate(FIXES):
        if index == broken:
            statement = statement.replace(" IF NOT EXISTS", "")
        shared.git(repo, "checkout", "-q", "-b", name, BASE)
        shared.Edit("app/db.py", anchor, f'    "{statement}",\n{anchor}').apply(repo)
        shared.git(
            repo,
            "commit",
            "-q",
            "-am",
            f"{name.split('/')[1]}: {statement}",
            env={
                "GIT_AUTHOR_DATE": DATE,
                "GIT_COMMITTER_DATE": DATE,
            },
        )
    shared.git(repo, "checkout", "-q", "main")
    return [name for name, _, _ in FIXES]


def validate(repo: Path, out: Path, heads: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `gatekeeper validate` of `heads` onto BASE; it must approve."""
    command = [sys.executable, "-m", "bot", "validate", "--repo", str(repo), "--base", BASE]
    command += [arg for head in heads for arg in ("--head", head)]
    command += ["--policy", str(POLICY), "--out", str(out)]
    seconds, code, _stdout, stderr = run_child(command, env)
    if code != 0:
        what = " + ".join(heads)
        raise RunFailed(
            f"{what}: gatekeeper validate exited {code} (0 = approve):\n{stderr[-3000:]}"
        )
    return seconds


def search(repo: Path, heads: list[str], rounds: int) -> list[tuple[float, float]]:
    """(seconds restoring the kept base, seconds making it in every run) of the rejected
    group's culprit search, per round; the first round is a warm-up, not returned."""
    loaded = load_policy(POLICY)
    base_sha = resolve(repo, BASE)
    members = [BatchMember(ref=head, sha=resolve(repo, head)) for head in heads]
    job = Job(
        repository=str(repo),
        base_ref=BASE,
        head_ref=heads[0],
        base_sha=base_sha,
        head_sha=members[0].sha,
        policy_source=loaded.source,
    )
    timings = []
    with Batch(repo, job, members) as batch:
        chain = batch.chain

        def run(one: Job, where: Path, kept: KeptBase | None = None):
            return pipeline(one, where, loaded, factory("local"), kept=kept)

        for index in range(rounds + 1):
            label = "warm-up" if index == 0 else f"run {index}/{rounds}"
            with KeptBase() as kept:
                whole = run(batch.job(), chain.repo, kept)
                if not failed(whole):
                    raise RunFailed(f"the group was not rejected: {whole.summary}")
                started = time.monotonic()
                restoring = find_culprit(chain, lambda j, r: run(j, r, kept), whole)
                restored = time.monotonic() - started
            started = time.monotonic()
            making = find_culprit(chain, lambda j, r: run(j, r), whole)
            made = time.monotonic() - started
            for found in (restoring, making):
                if isinstance(found, str) or found.head.ref != heads[2]:
                    raise RunFailed(f"the search did not name {heads[2]}: {found}")
            if [t["decision"] for t in restoring.tried] != [t["decision"] for t in making.tried]:
                raise RunFailed(f"the searches differ: {restoring.tried} / {making.tried}")
            runs = len(restoring.tried) - 1
            print(
                f"{label:<10} search of {runs} runs: kept base {restored:6.2f} s, "
                f"made in each {made:6.2f} s",
                file=sys.stderr,
                flush=True,
            )
            if index > 0:
                timings.append((restored, made))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument("--search", action="store_true", help="time a rejected group's search")
    options = parser.parse_args(argv)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if len(env.get(SECRET_ENV, "")) < 32:
        env[SECRET_ENV] = secrets.token_urlsafe(32)
    env["GATEKEEPER_PASS_ENV"] = SECRET_ENV  # the policy hands it to the API
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    groups: list[float] = []
    singles: list[list[float]] = []
    try:
        repo = scratch / "sessions-api"
        if options.search:
            os.environ.update({k: env[k] for k in (SECRET_ENV, "GATEKEEPER_PASS_ENV")})
            timings = search(repo, build(repo, broken=2), options.runs)
            report_search(timings, (load_before, os.getloadavg()))
            return 0
        heads = build(repo)
        for index in range(options.runs + 1):
            label = "warm-up" if index == 0 else f"run {index}/{options.runs}"
            group = validate(repo, scratch / f"group-{index}", heads, env)
            print(f"{label:<10} group of 4  {group:6.2f} s", file=sys.stderr, flush=True)
            alone = []
            for head in heads:
                alone.append(validate(repo, scratch / f"{index}-{head}", [head], env))
                print(f"{label:<10} {head:<24} {alone[-1]:6.2f} s", file=sys.stderr, flush=True)
            if index > 0:
                groups.append(group)
                singles.append(alone)
    except RunFailed as exc:
        print(f"\nRUN FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # run_child stopped the child first
        print("interrupted: children stopped, temp dirs removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(groups, singles, (load_before, os.getloadavg()))
    return 0


def report_search(
    timings: list[tuple[float, float]],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    restored = summary([kept for kept, _ in timings])
    made = summary([fresh for _, fresh in timings])
    print(f"\nsessions-api search, {len(timings)} rounds  {'median':>8} {'max/p90':>12} {'min':>8}")
    for name, (median, high, low, label) in (
        ("restoring the kept base", restored),
        ("making the base in each run", made),
    ):
        print(f"{name:<32} {median:7.2f}s {high:7.2f}s {label:>4} {low:7.2f}s")
    print(f"{'ratio kept / made':<32} {restored[0] / made[0]:7.2f}x")
    (before, *_), (after, *_) = loads
    print(f"\n{os.cpu_count()} cores; 1-minute load average {before:.2f} before, {after:.2f} after")


def report(
    groups: list[float],
    singles: list[list[float]],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    """The figures; the load averages say whether others shared the machine meanwhile."""
    group = summary(groups)
    single = summary([seconds for round_ in singles for seconds in round_])
    four = summary([sum(round_) for round_ in singles])
    print(f"\nsessions-api, {len(groups)} rounds       {'median':>8} {'max/p90':>12} {'min':>8}")
    for name, (median, high, low, label) in (
        ("group of 4, one run", group),
        ("one fix alone", single),
        ("the 4 fixes alone, summed", four),
    ):
        print(f"{name:<32} {median:7.2f}s {high:7.2f}s {label:>4} {low:7.2f}s")
    ratio = group[0] / single[0]
    print(f"{'ratio group / one single run':<32} {ratio:7.2f}x")
    print(f"{'ratio group / the 4 singles':<32} {group[0] / four[0]:7.2f}x")
    print(f"bound < {BOUND} single runs (median ratio): {'met' if ratio < BOUND else 'NOT met'}")
    (before, *_), (after, *_) = loads
    print(f"\n{os.cpu_count()} cores; 1-minute load average {before:.2f} before, {after:.2f} after")


if __name__ == "__main__":
    sys.exit(main())

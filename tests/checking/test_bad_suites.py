"""A bad suite file ends the check in exit 2 naming the suite's file and line.

Suites come through the same loader as policies (bot/policy/yamlfile.py), so these are the
suite-shaped cases of tests/policy/test_bad_input.py, seen from `gatekeeper policy check`
of a policy that names them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.checking import load_suites
from bot.policy.yamlfile import ConfigError

GATEKEEPER = [sys.executable, "-m", "bot"]
POLICY = "version: 1\nmigrations: {mode: directory, directory: migrations}\nsuites: [checks]\n"
HEAD = "id: s\ntitle: t\nsteps:\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def check(policy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEKEEPER, "policy", "check", str(policy)], capture_output=True, text=True, timeout=60
    )


def refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for text in expected:
        assert any(text in line for line in proc.stderr.splitlines()), (text, proc.stderr)


def test_billion_laughs_in_a_suite(tmp_path: Path) -> None:
    laughs = ["lol0: &lol0 [" + ", ".join(["lol"] * 9) + "]"]
    laughs += [f"lol{n}: &lol{n} [" + ", ".join([f"*lol{n - 1}"] * 9) + "]" for n in range(1, 9)]
    suite = write(
        tmp_path / "checks" / "s.yml",
        HEAD + "  - {id: a, http: {path: /x}}\n" + "\n".join(laughs) + "\n",
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_suites([suite])
    assert time.perf_counter() - start < 0.5
    (problem,) = info.value.problems
    assert problem.startswith(f"{suite}:10:")
    assert "alias *lol4 stands for 66,430 values" in problem
    refused(check(write(tmp_path / "gatekeeper.yml", POLICY)), f"{suite}:10:")


# (case, steps after HEAD, start of the message after 'file:line:col: '). The undefined
# variable comes first: a suite's variables are checked only when the suites that run
# before it loaded, since it may use what they capture.
BAD_STEPS = [
    (
        "undefined variable",
        "  - {id: a, http: {path: '/x/${never_captured}'}}\n",
        "4:26: ${never_captured} is undefined",
    ),
    ("complex key", "  - {id: a, http: {path: /x}, ? [b]: 1}\n", "4:33: a key must be a plain"),
    (
        "python tag",
        "  - {id: a, http: {path: !!python/name:os.system x}}\n",
        "4:26: unsupported tag !!python/name:os.system",
    ),
    ("infinite budget", "  - {id: a, within_ms: .inf, http: {path: /x}}\n", "4:24: '.inf' is not"),
    (
        "1e999 budget",
        "  - {id: a, within_ms: 1e999, http: {path: /x}}\n",
        "4:24: steps.0.within_ms: Input should be a finite number",
    ),
    (
        "regex too large",
        "  - {id: a, logs: {must_match: ['a{99999999999}']}}\n",
        "4:33: steps.0.logs.must_match.0: Value error, invalid regular expression",
    ),
]


@pytest.mark.parametrize(("case", "steps", "message"), BAD_STEPS, ids=[c[0] for c in BAD_STEPS])
def test_bad_suite_is_a_config_error_at_its_line(
    tmp_path: Path, case: str, steps: str, message: str
) -> None:
    suite = write(tmp_path / "s.yml", HEAD + steps)
    with pytest.raises(ConfigError) as info:
        load_suites([suite])
    assert any(p.startswith(f"{suite}:{message}") for p in info.value.problems), (
        message,
        info.value.problems,
    )


def test_policy_check_reports_every_bad_suite(tmp_path: Path) -> None:
    suites = [
        write(tmp_path / "checks" / f"{index}.yml", HEAD.replace("id: s", f"id: s{index}") + steps)
        for index, (_, steps, _) in enumerate(BAD_STEPS)
    ]
    bad_bytes = write(tmp_path / "checks" / "bytes.yml", HEAD.encode() + b"  - id: caf\xe9\n")
    proc = check(write(tmp_path / "gatekeeper.yml", POLICY))
    refused(
        proc,
        *(f"{suite}:{message}" for suite, (_, _, message) in zip(suites, BAD_STEPS, strict=True)),
        f"{bad_bytes}:4:12: not UTF-8 (byte 0xe9)",
    )


def test_a_fifo_suite_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yml")
    policy = write(tmp_path / "gatekeeper.yml", POLICY.replace("[checks]", "[fifo.yml]"))
    refused(check(policy), f"{tmp_path / 'fifo.yml'}: a FIFO, not a regular file")
    # In a directory, only regular files are suites: one holding just a FIFO runs nothing.
    (tmp_path / "checks").mkdir()
    os.mkfifo(tmp_path / "checks" / "s.yml")
    refused(check(write(policy, POLICY)), "suites entry 'checks' holds no suite files")


def test_an_empty_suite_directory_given_to_load_suites_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_suites([tmp_path])
    assert info.value.problems == [f"{tmp_path}: no suite files (*.yml, *.yaml) in this directory"]
    assert load_suites([]) == []

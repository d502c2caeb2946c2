"""Bad input never crashes, hangs or passes silently.

Each file here is one a policy check once hung on, crashed on (a traceback and exit 1,
which reads as "reject") or accepted. `gatekeeper policy check` must end every one in
exit 2 with one line naming the file and, where there is one, the line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.policy import load_policy
from bot.policy.loader import policy_at
from bot.policy.yamlfile import MAX_BYTES, MAX_DEPTH, ConfigError
from tests.helpers import git

GATEKEEPER = [sys.executable, "-m", "bot"]
# A policy that is valid on its own: every case adds one bad thing to it.
VALID = "version: 1\nmigrations: {mode: directory, directory: migrations}\n"
SUITE = """\
id: health
title: The API answers
steps:
  - id: health
    http: {path: /healthz}
"""


def billion_laughs(levels: int = 9) -> str:
    """The classic: each anchor names nine of the one before, 10^9 values once expanded."""
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * 9) + "]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*lol{level - 1}"] * 9)
        lines.append(f"lol{level}: &lol{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    # timeout: a hang fails the test instead of stalling the suite.
    return subprocess.run(
        [*GATEKEEPER, "policy", "check", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 (a configuration error, not 1, a reject), one line per problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for text in expected:
        assert any(text in line for line in proc.stderr.splitlines()), (text, proc.stderr)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def position(text: str, needle: str) -> str:
    """'line:col' of the first `needle` in `text`, as the messages count them (from 1)."""
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - (before.rfind(chr(10)) + 1) + 1}"


# --------------------------------------------------------------------------- the YAML itself


def test_billion_laughs_is_refused_at_the_alias_in_well_under_a_second(tmp_path: Path) -> None:
    text = VALID + billion_laughs()
    path = write(tmp_path / "gatekeeper.yml", text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert time.perf_counter() - start < 0.5
    # lol5's first alias is the one that takes the expanded file past the limit.
    where = position(text, "*lol4")
    lol5 = text.splitlines().index(next(line for line in text.splitlines() if "lol5" in line))
    assert where.startswith(f"{lol5 + 1}:")
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:{where}: alias *lol4 stands for 66,430 values")
    refused(check(path), f"{path}:{where}: alias *lol4 stands for 66,430 values")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = VALID + "name: &loop [a, *loop]\n"
    path = write(tmp_path / "gatekeeper.yml", text)
    refused(check(path), f"{path}:{position(text, '*loop')}: alias *loop is inside the value")


# (case, what follows VALID, text at the reported position, start of the message there)
BAD_YAML: list[tuple[str, str, str, str]] = [
    ("complex key", "? [a, b]\n: 1\n", "[a, b]", "a key must be a plain value"),
    ("mapping key", "? {a: 1}\n: 1\n", "{a: 1}", "a key must be a plain value"),
    (
        "python tag",
        'name: !!python/object/apply:os.system ["true"]\n',
        "!!python",
        "unsupported tag !!python/object/apply:os.system",
    ),
    ("local tag", "name: !include other.yml\n", "!include", "unsupported tag !include"),
    ("infinity", "timeouts: {step: .inf}\n", ".inf", "'.inf' is not a finite number"),
    ("minus infinity", "timeouts: {run: -.inf}\n", "-.inf", "'-.inf' is not a finite number"),
    ("not a number", "timeouts: {step: .nan}\n", ".nan", "'.nan' is not a finite number"),
    ("overflow", "timeouts: {step: 1.0e+999}\n", "1.0e", "'1.0e+999' is not a finite number"),
    # YAML 1.1 reads 1e999 as text; float() would read that text as infinity.
    ("1e999", "timeouts: {step: 1e999}\n", "1e999", "timeouts.step: Input should be a finite"),
    (
        "infinite duration",
        "timeouts: {lock_timeout: " + "9" * 400 + "s}\n",
        "999",
        "timeouts.lock_timeout: Value error, '999",
    ),
    ("bad date", "name: 2024-13-45\n", "2024", "cannot read '2024-13-45' as !!timestamp"),
    ("long integer", "name: " + "7" * 5000 + "\n", "777", "cannot read '777"),
    (
        "control character",
        'name: "a\x01"\n',
        "\x01",
        "invalid YAML: control characters are not allowed (U+0001)",
    ),
    ("undefined alias", "name: *nowhere\n", "*nowhere", "invalid YAML: found undefined alias"),
    (
        "two documents",
        "name: a\n---\nname: b\n",
        "---",
        "invalid YAML: expected a single document in the stream",
    ),
    (
        "deep nesting",
        "name: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n",
        "[" * (MAX_DEPTH + 1),
        f"nested more than {MAX_DEPTH} levels deep",
    ),
    ("absolute suite", "suites: [/etc]\n", "/etc", "suites.0: Value error, '/etc' is absolute"),
    ("empty suite", "suites: ['']\n", "''", "suites.0: Value error, '' is not a path"),
]


def bad_file(directory: Path, case: str, bad: str, needle: str, message: str) -> tuple[Path, str]:
    """The policy file of one BAD_YAML case and the problem line it must produce."""
    text = VALID + bad
    path = write(directory / "gatekeeper.yml", text)
    where = position(text, needle)
    if case == "deep nesting":
        # The top-level mapping is level 1, so the 100th bracket is the first too deep.
        where = f"3:{len('name: ') + MAX_DEPTH}"
    return path, f"{path}:{where}: {message}"


@pytest.mark.parametrize(
    ("case", "bad", "needle", "message"), BAD_YAML, ids=[case[0] for case in BAD_YAML]
)
def test_bad_yaml_is_a_config_error_at_its_line(
    tmp_path: Path, case: str, bad: str, needle: str, message: str
) -> None:
    path, expected = bad_file(tmp_path, case, bad, needle, message)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_policy(path).suite_paths()
    assert time.perf_counter() - start < 1
    assert any(problem.startswith(expected) for problem in info.value.problems), (
        expected,
        info.value.problems,
    )


def test_policy_check_exits_2_with_one_line_for_each_bad_yaml_file(tmp_path: Path) -> None:
    # One process for all the cases: each start of the CLI costs over a second.
    cases = [bad_file(tmp_path / str(index), *case) for index, case in enumerate(BAD_YAML)]
    proc = check(*(path for path, _ in cases))
    refused(proc, *(expected for _, expected in cases))
    assert "ok " not in proc.stderr, proc.stderr


def test_non_utf8_bytes_are_refused_at_their_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "gatekeeper.yml", VALID.encode() + b"name: caf\xe9\n")
    refused(check(path), f"{path}:3:10: not UTF-8 (byte 0xe9)")
    utf16 = write(tmp_path / "utf16.yml", VALID.encode("utf-16"))
    refused(check(utf16), f"{utf16}:1:1: not UTF-8 (byte 0xff)")


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path / "gatekeeper.yml", VALID + "#" * MAX_BYTES + "\n")
    refused(check(path), f"{path}: larger than {MAX_BYTES // 1024} KiB")


# --------------------------------------------------------------------------- what is not a file


def test_dev_zero_is_refused_without_reading_it() -> None:
    refused(check(Path("/dev/zero")), "/dev/zero: a character device, not a regular file")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "gatekeeper.yml"
    os.mkfifo(fifo)
    refused(check(fifo), f"{fifo}: a FIFO, not a regular file")


def test_a_directory_and_a_missing_file_are_config_errors(tmp_path: Path) -> None:
    refused(check(tmp_path), f"{tmp_path}: a directory, not a regular file")
    refused(check(tmp_path / "nowhere.yml"), f"{tmp_path / 'nowhere.yml'}: cannot read: No such")


def test_every_file_is_checked_and_one_bad_file_fails_the_check(tmp_path: Path) -> None:
    good = write(tmp_path / "good" / "gatekeeper.yml", VALID)
    bad = write(tmp_path / "bad" / "gatekeeper.yml", VALID + "? [a]\n: 1\n")
    proc = check(bad, good)
    refused(proc, f"{bad}:3:3: a key must be a plain value")
    assert f"ok {good}" in proc.stderr


# --------------------------------------------------------------------------- suite paths


def policy_with_suites(directory: Path, *entries: str) -> Path:
    listed = ", ".join(f"'{entry}'" for entry in entries)
    return write(directory / "gatekeeper.yml", VALID + f"suites: [{listed}]\n")


def test_a_suite_path_leaving_the_tree_is_refused(tmp_path: Path) -> None:
    path = policy_with_suites(tmp_path, "../../../../etc/passwd")
    refused(check(path), f"{path}: suites entry '../../../../etc/passwd' leads outside {tmp_path}")


def test_a_suite_link_leaving_the_tree_is_refused(tmp_path: Path) -> None:
    policies = tmp_path / "project"
    (policies / "checks").mkdir(parents=True)
    (policies / "etc").symlink_to("/etc")
    path = policy_with_suites(policies, "etc/passwd")
    refused(check(path), f"{path}: suites entry 'etc/passwd' is a link to /etc/passwd, outside")
    # A link inside a directory the policy names counts as well.
    write(policies / "checks" / "health.yml", SUITE)
    outside = write(tmp_path / "outside.yml", SUITE.replace("health", "elsewhere"))
    (policies / "checks" / "z.yml").symlink_to(outside)
    path = policy_with_suites(policies, "checks")
    refused(check(path), f"suites entry 'checks': z.yml is a link to {outside}, outside")


def test_a_suite_list_that_runs_no_check_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    write(tmp_path / "checks" / "README.md", "suites go here\n")
    path = policy_with_suites(tmp_path, "checks")
    refused(check(path), f"{path}: suites entry 'checks' holds no suite files")


def test_no_suites_at_all_is_still_a_valid_policy(tmp_path: Path) -> None:
    # The packaged default: only migrations are checked. An empty list names nothing to lose.
    path = write(tmp_path / "gatekeeper.yml", VALID + "suites: []\n")
    assert check(path).returncode == 0


def test_in_a_git_work_tree_suites_may_be_anywhere_in_it(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write(tmp_path / "checks" / "health.yml", SUITE)
    path = policy_with_suites(tmp_path / "ops" / "gate", "../../checks")
    proc = check(path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in load_policy(path).suite_paths()] == ["health.yml"]
    # ... but not outside it.
    write(tmp_path.parent / f"{tmp_path.name}-sibling" / "s.yml", SUITE)
    path = policy_with_suites(tmp_path / "ops" / "gate", f"../../../{tmp_path.name}-sibling")
    refused(check(path), f"leads outside {tmp_path}")


def test_outside_git_suites_stay_beside_the_policy(tmp_path: Path) -> None:
    write(tmp_path / "checks" / "health.yml", SUITE)
    write(tmp_path / "policies" / "checks" / "health.yml", SUITE)
    beside = policy_with_suites(tmp_path / "policies", "checks")
    assert check(beside).returncode == 0
    above = policy_with_suites(tmp_path / "policies", "../checks")
    refused(check(above), f"suites entry '../checks' leads outside {tmp_path / 'policies'}")


def test_a_repository_policy_reaches_the_whole_tree_and_nothing_past_it(tmp_path: Path) -> None:
    """`.github/gatekeeper.yml` names `../checks` (the repository's root), in a work tree
    and in the tree extracted from the base commit, which has no .git of its own."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo / "checks" / "health.yml", SUITE)
    write(repo / ".github" / "gatekeeper.yml", VALID + "suites: [../checks]\n")
    write(repo / ".github" / "escape.yml", VALID + "suites: [../../outside]\n")
    write(tmp_path / "outside" / "s.yml", SUITE)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "policy")
    sha = git(repo, "rev-parse", "HEAD").strip()
    with policy_at(repo, sha) as loaded:
        assert loaded.source.endswith(":.github/gatekeeper.yml")
        assert [p.name for p in loaded.suite_paths()] == ["health.yml"]
    assert check(repo / ".github" / "gatekeeper.yml").returncode == 0
    refused(check(repo / ".github" / "escape.yml"), f"'../../outside' leads outside {repo}")


def test_a_billion_laughs_base_branch_policy_is_refused_quickly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo / ".github" / "gatekeeper.yml", VALID + billion_laughs())
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "policy")
    sha = git(repo, "rev-parse", "HEAD").strip()
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info, policy_at(repo, sha):
        pass
    assert time.perf_counter() - start < 5  # git archive included; the YAML takes ~1 ms
    (problem,) = info.value.problems
    assert re.match(rf"{sha[:12]}:\.github/gatekeeper\.yml:\d+:\d+: alias \*lol4 ", problem)


def test_shipped_policies_still_check_with_their_suites() -> None:
    from bot.resources import data_path

    proc = check(data_path("policies") / "sessions-api.yml", data_path("policies") / "default.yml")
    assert proc.returncode == 0, proc.stderr

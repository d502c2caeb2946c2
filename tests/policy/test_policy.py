"""Policies: every mistake a person makes gets file:line:col, the key, a hint, and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.policy import load_policy
from bot.policy.loader import api_env, default_policy_path
from bot.policy.model import duration_seconds
from bot.policy.yamlfile import ConfigError
from bot.resources import data_path

GATEKEEPER = [sys.executable, "-m", "bot"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatekeeper.yml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    return info.value.problems


def test_shipped_policies_load():
    for name in ("default.yml", "sessions-api.yml"):
        loaded = load_policy(data_path("policies") / name)
        assert loaded.suite_paths() is not None
    assert default_policy_path().exists()


def test_typo_names_line_column_and_closest_key(tmp_path):
    found = problems(tmp_path, "version: 1\nmigrations:\n  mode: startup\n  reaply: true\n")
    assert any(
        p.endswith(
            "gatekeeper.yml:4:3: unknown key 'reaply' in migrations; did you mean 'reapply'?"
        )
        for p in found
    ), found


def test_unknown_top_level_key_lists_valid_keys_when_nothing_is_close(tmp_path):
    (problem,) = problems(
        tmp_path, "version: 1\nzzz: 3\nmigrations: {mode: directory, directory: m}\n"
    )
    assert ":2:1: unknown key 'zzz'" in problem
    assert "valid keys:" in problem and "migrations" in problem


def test_wrong_type_and_bad_enum(tmp_path):
    found = problems(
        tmp_path,
        "migrations:\n  mode: sometimes\ntimeouts:\n  step: soon\n",
    )
    assert any(":2:9: migrations.mode:" in p for p in found), found
    assert any(":4:9: timeouts.step:" in p for p in found), found


def test_missing_required_key(tmp_path):
    found = problems(tmp_path, "api:\n  health_path: /healthz\n")
    assert any("missing required key 'api.command'" in p and ":2:3:" in p for p in found), found


def test_cross_field_rules(tmp_path):
    (problem,) = problems(tmp_path, "migrations:\n  mode: directory\n")
    assert "mode 'directory' needs 'directory'" in problem
    (problem,) = problems(tmp_path, "auth: {type: jwt}\nmigrations: {mode: command, command: x}\n")
    assert "needs 'secret_env'" in problem


def test_duplicate_key_and_invalid_yaml(tmp_path):
    (problem,) = problems(tmp_path, "version: 1\nversion: 1\n")
    assert ":2:1: duplicate key 'version'" in problem
    (problem,) = problems(tmp_path, "api: [unclosed\n")
    assert "invalid YAML" in problem and "gatekeeper.yml:" in problem


def test_bad_durations(tmp_path):
    found = problems(tmp_path, "timeouts:\n  lock_timeout: forever\n")
    assert any("'forever' is not a duration" in p for p in found), found
    assert duration_seconds("250ms") == 0.25
    assert duration_seconds("2min") == 120


def test_decision_rules_must_cover_every_risk(tmp_path):
    found = problems(tmp_path, "decision:\n  risk: {low: approve}\n")
    assert any("no decision for risk level(s): medium, high, critical" in p for p in found)


def test_env_expansion_names_the_missing_variable(tmp_path):
    path = write(tmp_path, "api:\n  command: run\n  env:\n    SECRET: ${GK_TEST_UNSET_VARIABLE}\n")
    loaded = load_policy(path)
    assert api_env(loaded, {"GK_TEST_UNSET_VARIABLE": "x"}) == {"SECRET": "x"}
    with pytest.raises(ConfigError, match=r"api.env.SECRET needs \$\{GK_TEST_UNSET_VARIABLE\}"):
        api_env(loaded, {})


def test_missing_suite_paths_are_reported(tmp_path):
    path = write(tmp_path, "suites: [nowhere]\nmigrations: {mode: directory, directory: m}\n")
    with pytest.raises(ConfigError, match="suites not found"):
        load_policy(path).suite_paths()


def test_policy_check_command(tmp_path):
    good = data_path("policies") / "sessions-api.yml"
    ok = subprocess.run([*GATEKEEPER, "policy", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = write(tmp_path, "migratons: {}\n")
    proc = subprocess.run(
        [*GATEKEEPER, "policy", "check", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "gatekeeper.yml:1:1: unknown key 'migratons'" in proc.stderr
    assert "did you mean 'migrations'?" in proc.stderr


def test_policy_schema_command_prints_json_schema_in_sync_with_the_file():
    proc = subprocess.run([*GATEKEEPER, "policy", "schema"], capture_output=True, text=True)
    assert proc.returncode == 0
    printed = json.loads(proc.stdout)
    assert printed["additionalProperties"] is False
    assert "migrations" in printed["properties"]
    kept = json.loads((data_path("policies") / "policy.schema.json").read_text())
    assert kept == printed, (
        "policies/policy.schema.json is stale: regenerate with `gatekeeper policy schema`"
    )


def test_lint_rules_in_the_policy_are_checked(tmp_path):
    found = problems(tmp_path, "lint:\n  severity: {ban-drop-colum: low}\n")
    assert any(
        ":2:13: lint.severity: Value error, unknown rule 'ban-drop-colum'; "
        "did you mean 'ban-drop-column'?" in p
        for p in found
    ), found
    found = problems(tmp_path, "lint:\n  disabled: {ban-truncate: ''}\n")
    assert any("disabling ban-truncate needs a reason" in p for p in found), found

"""Fuzzing the policy loader: whatever the file holds, a ConfigError or a policy, quickly.

Every example goes the way `gatekeeper policy check` goes: the file, the policy model, the
suite paths it names and the suites there. The deadline fails an example that is slow; the
module's pytest timeout fails one that hangs.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.checking import load_suites
from bot.checking.model import compile_jsonpath
from bot.policy import Policy, load_policy, load_policy_text
from bot.resources import data_path
from tests.policy.yaml_strategies import documents, edits_of, model_keys, only_config_errors

pytestmark = pytest.mark.timeout(600)

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
POLICY_KEYS = model_keys(Policy)
SHIPPED = (data_path("policies") / "sessions-api.yml").read_text(encoding="utf-8")

compile_jsonpath("$.warm")  # the JSONPath parser builds its tables once, slowly


def check_file(data: bytes) -> None:
    """One policy file in a directory of its own, checked as `gatekeeper policy check` does."""
    with tempfile.TemporaryDirectory(prefix="gatekeeper-fuzz-") as tmp:
        path = Path(tmp) / "gatekeeper.yml"
        path.write_bytes(data)

        def load() -> None:
            loaded = load_policy(path)
            load_suites(loaded.suite_paths())

        only_config_errors(load, tmp)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes(data: bytes) -> None:
    check_file(data)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text(text: str) -> None:
    check_file(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(documents(POLICY_KEYS))
def test_documents_of_policy_keys(text: str) -> None:
    check_file(text.encode())


@FUZZ
@given(edits_of(SHIPPED))
def test_edits_of_the_shipped_policy(text: str) -> None:
    check_file(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.one_of(st.text(max_size=2000), documents(POLICY_KEYS), edits_of(SHIPPED)))
def test_text_read_from_git(text: str) -> None:
    """A repository's policy arrives as text from `git show`, not as a file."""
    with tempfile.TemporaryDirectory(prefix="gatekeeper-fuzz-") as tmp:
        source = "0123456789ab:.github/gatekeeper.yml"
        base = Path(tmp) / ".github"
        base.mkdir()

        def load() -> None:
            loaded = load_policy_text(text, source, base)
            load_suites(loaded.suite_paths())

        only_config_errors(load, "gatekeeper")

"""Fuzzing the suite loader: whatever a suite file holds, a ConfigError or suites, quickly.

The strategies are the policy fuzzer's (tests/policy/yaml_strategies.py), aimed at the
suite model's keys and at the shipped suites.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.checking import Suite, load_suites
from bot.checking.model import compile_jsonpath
from tests.policy.yaml_strategies import documents, edits_of, model_keys, only_config_errors

pytestmark = pytest.mark.timeout(600)

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
CHECKS = Path(__file__).resolve().parents[2] / "checks"
SHIPPED = [path.read_text(encoding="utf-8") for path in sorted(CHECKS.rglob("*.yml"))]
SUITE_KEYS = model_keys(Suite)

compile_jsonpath("$.warm")  # the JSONPath parser builds its tables once, slowly


def check_suite(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="gatekeeper-fuzz-") as tmp:
        path = Path(tmp) / "suite.yml"
        path.write_bytes(data)
        # As a file and as the directory holding it: the pipeline passes either.
        only_config_errors(lambda: load_suites([path]), str(path))
        only_config_errors(lambda: load_suites([Path(tmp)]), str(path))


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes(data: bytes) -> None:
    check_suite(data)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text(text: str) -> None:
    check_suite(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(documents(SUITE_KEYS))
def test_documents_of_suite_keys(text: str) -> None:
    check_suite(text.encode())


@FUZZ
@given(st.sampled_from(SHIPPED).flatmap(edits_of))
def test_edits_of_the_shipped_suites(text: str) -> None:
    check_suite(text.encode("utf-8", "surrogatepass"))

"""Check suites in YAML and the runner that turns their steps into Verdict criteria."""

from bot.scenario.model import HttpStep, LogsStep, SqlStep, Suite
from bot.scenario.runner import (
    LogReader,
    RunContext,
    StepResult,
    SuiteResult,
    load_suites,
    run_suite,
)

__all__ = [
    "HttpStep",
    "LogReader",
    "LogsStep",
    "RunContext",
    "SqlStep",
    "StepResult",
    "Suite",
    "SuiteResult",
    "load_suites",
    "run_suite",
]

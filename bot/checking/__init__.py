"""Check suites in YAML, the runner that turns their steps into Verdict criteria, and the
credentials a suite sends (`auth`: a JWT, a token, or a login like a client's).

May import: judging (the Verdict's criteria), policy, sandbox (the constructed environment).
"""

from bot.checking.model import HttpStep, LogsStep, SqlStep, Suite
from bot.checking.runner import (
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

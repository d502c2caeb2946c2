"""Migration linter: PostgreSQL's own grammar (pglast), Squawk-style rules, findings by line.

Usage: `lint_sql(sql, file="migrations/0042.sql", options=LintOptions(pg_version=16))`.
"""

from bot.judging.lint.engine import LintResult, lint_sql
from bot.judging.lint.model import LintOptions, LockMode, Rule
from bot.judging.lint.rules import ENGINE_FINDINGS, RULES, explain, rules_markdown

__all__ = [
    "ENGINE_FINDINGS",
    "RULES",
    "LintOptions",
    "LintResult",
    "LockMode",
    "Rule",
    "explain",
    "lint_sql",
    "rules_markdown",
]

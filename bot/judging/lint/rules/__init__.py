"""The rule registry: one module per rule, named after it, each exporting `RULE`.

Rules are data, so the same registry drives the linter, `explain()` and the README's table.
"""

from dataclasses import dataclass

from bot.judging.lint.model import Rule
from bot.judging.lint.rules import (
    adding_enum_value_in_transaction,
    adding_field_with_default,
    adding_foreign_key_constraint,
    adding_not_nullable_field,
    adding_required_field,
    ban_alter_domain_with_add_constraint,
    ban_char_field,
    ban_cluster,
    ban_concurrent_index_creation_in_transaction,
    ban_drop_column,
    ban_drop_database,
    ban_drop_default,
    ban_drop_schema,
    ban_drop_table,
    ban_truncate,
    ban_vacuum_full,
    changing_column_type,
    constraint_missing_not_valid,
    create_extension,
    disallowed_unique_constraint,
    multiple_table_locks_in_transaction,
    narrowing_column_type,
    prefer_bigint_over_int,
    prefer_identity,
    prefer_robust_stmts,
    prefer_timestamptz,
    renaming_column,
    renaming_table,
    require_concurrent_index_creation,
    require_concurrent_index_deletion,
    require_concurrent_partition_detach,
    require_concurrent_reindex,
    require_lock_timeout,
)
from bot.judging.verdict import Risk

MODULES = (
    adding_field_with_default,
    adding_required_field,
    adding_not_nullable_field,
    adding_foreign_key_constraint,
    constraint_missing_not_valid,
    disallowed_unique_constraint,
    ban_alter_domain_with_add_constraint,
    require_concurrent_index_creation,
    require_concurrent_index_deletion,
    require_concurrent_reindex,
    require_concurrent_partition_detach,
    ban_concurrent_index_creation_in_transaction,
    changing_column_type,
    narrowing_column_type,
    renaming_column,
    renaming_table,
    ban_drop_column,
    ban_drop_default,
    ban_drop_table,
    ban_drop_schema,
    ban_drop_database,
    ban_truncate,
    ban_vacuum_full,
    ban_cluster,
    adding_enum_value_in_transaction,
    require_lock_timeout,
    multiple_table_locks_in_transaction,
    prefer_robust_stmts,
    create_extension,
    prefer_identity,
    prefer_bigint_over_int,
    prefer_timestamptz,
    ban_char_field,
)
RULES: dict[str, Rule] = {module.RULE.id: module.RULE for module in MODULES}


@dataclass(frozen=True)
class EngineFinding:
    """A finding about the file itself rather than a statement: not suppressible inline."""

    id: str
    title: str
    default_level: Risk
    why: str


SYNTAX_ERROR = "syntax-error"
INVALID_SUPPRESSION = "invalid-suppression"
ENGINE_FINDINGS: dict[str, EngineFinding] = {
    finding.id: finding
    for finding in (
        EngineFinding(
            SYNTAX_ERROR,
            "SQL that PostgreSQL cannot parse",
            Risk.high,
            "The migration (or the DO block / function body) fails before doing anything.",
        ),
        EngineFinding(
            INVALID_SUPPRESSION,
            "Malformed gatekeeper:ignore comment",
            Risk.low,
            "A suppression needs known rule ids and a reason; without a reason it is not applied.",
        ),
    )
}


def explain(rule_id: str) -> str:
    """A rule's documentation as plain text (KeyError for an unknown id)."""
    if rule_id in ENGINE_FINDINGS:
        finding = ENGINE_FINDINGS[rule_id]
        return f"{finding.id}: {finding.title}\n\n{finding.why}\n\nLevel: {finding.default_level}"
    rule = RULES[rule_id]
    return "\n".join(
        [
            f"{rule.id}: {rule.title}",
            "",
            rule.why,
            "",
            f"Lock: {rule.lock or 'none on existing data'}",
            f"Rewrites the table: {'yes' if rule.rewrites else 'no'}",
            f"Scans the table: {'yes' if rule.scans else 'no'}",
            f"Level: {rule.default_level}",
            "",
            f"Safe alternative: {rule.safe_alternative}",
        ]
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def rules_markdown() -> str:
    """The rules as a Markdown table, for the README."""
    lines = [
        "| Rule | Level | Lock | Rewrites | Why | Safe alternative |",
        "|---|---|---|---|---|---|",
    ]
    for rule in RULES.values():
        cells = [
            f"`{rule.id}`",
            str(rule.default_level),
            rule.lock or "—",
            "yes" if rule.rewrites else "no",
            rule.why,
            rule.safe_alternative,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for finding in ENGINE_FINDINGS.values():
        cells = [f"`{finding.id}`", str(finding.default_level), "—", "no", finding.why, "—"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"

"""The engine: positions, DO blocks and function bodies, transactions, suppressions, options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.judging.lint import RULES, LintOptions, LintResult, explain, lint_sql, rules_markdown
from bot.judging.lint.rules import ENGINE_FINDINGS, MODULES
from bot.judging.verdict import Risk


def _by_rule(result: LintResult, rule: str) -> list[tuple[int | None, str]]:
    return [(f.line, f.level.value) for f in result.findings if f.rule == rule]


# Positions ---------------------------------------------------------------------------------------


def test_lines_count_leading_comments_and_blank_lines() -> None:
    sql = "-- migration 42\n\n/* a block\n   comment */\n\n  DROP TABLE audit_log;\n"
    result = lint_sql(sql, file="m.sql")
    (finding,) = [f for f in result.findings if f.rule == "ban-drop-table"]
    assert (finding.file, finding.line, finding.column) == ("m.sql", 6, 3)
    assert finding.statement == "DROP TABLE audit_log"


def test_line_offset_is_added() -> None:
    sql = "SELECT 1;\nDROP TABLE audit_log;"
    assert _by_rule(lint_sql(sql, line_offset=40), "ban-drop-table") == [(42, "critical")]


def test_statement_after_a_trailing_comment_and_non_ascii_text() -> None:
    sql = "SELECT 'héllo wörld'; -- ünïcode\nSELECT 2;\n\nTRUNCATE sessions"
    assert _by_rule(lint_sql(sql), "ban-truncate") == [(4, "critical")]


# DO blocks and function bodies -------------------------------------------------------------------

STARTUP_MIGRATION = """\
-- run by the API at every start
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_name='sessions' AND column_name='tags') THEN
    ALTER TABLE sessions ADD COLUMN tags TEXT[];
  END IF;
  ALTER TABLE sessions ADD COLUMN token uuid DEFAULT gen_random_uuid();
  EXECUTE 'CREATE INDEX sessions_tags_idx
           ON sessions USING gin (tags)';
END $$;
"""


def test_do_block_statements_are_reported_at_their_line_in_the_file() -> None:
    result = lint_sql(STARTUP_MIGRATION, options=LintOptions(require_idempotent=True))
    assert result.errors == []
    assert _by_rule(result, "adding-field-with-default") == [(8, "medium")]
    # EXECUTE of a literal: the SQL inside the string, at the string's line.
    assert _by_rule(result, "require-concurrent-index-creation") == [(9, "medium")]
    # The guarded ALTER is idempotent; the unguarded ones are not.
    assert sorted(_by_rule(result, "prefer-robust-stmts")) == [(8, "high"), (9, "high")]


def test_the_products_one_line_startup_migration_is_idempotent() -> None:
    sql = (
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE "
        "table_name='sessions' AND column_name='tags') THEN ALTER TABLE sessions ADD COLUMN tags "
        "TEXT[]; END IF; END $$;"
    )
    result = lint_sql(sql, options=LintOptions(require_idempotent=True))
    # Only the lock is worth a word: the guarded ALTER is idempotent.
    assert [(f.rule, f.line) for f in result.findings] == [("require-lock-timeout", 1)]
    unguarded = sql.replace("IF NOT EXISTS (SELECT", "IF EXISTS (SELECT").replace(
        "BEGIN IF", "BEGIN ALTER TABLE sessions ADD COLUMN note text; IF"
    )
    result = lint_sql(unguarded, options=LintOptions(require_idempotent=True))
    assert _by_rule(result, "prefer-robust-stmts") == [(1, "high")]


def test_exception_handler_counts_as_a_guard() -> None:
    sql = (
        "DO $$\nBEGIN\n  ALTER TABLE t ADD CONSTRAINT c UNIQUE USING INDEX i;\n"
        "EXCEPTION WHEN duplicate_object THEN NULL;\nEND $$;"
    )
    result = lint_sql(sql, options=LintOptions(require_idempotent=True))
    assert _by_rule(result, "prefer-robust-stmts") == []


def test_concurrent_index_in_a_do_block_fails() -> None:
    sql = "DO $$\nBEGIN\n  CREATE INDEX CONCURRENTLY i ON t (a);\nEND $$;"
    result = lint_sql(sql)
    assert _by_rule(result, "ban-concurrent-index-creation-in-transaction") == [(3, "high")]
    assert "DO block" in result.findings[0].message


def test_execute_format_with_constant_arguments_is_linted() -> None:
    sql = (
        "DO $do$\nBEGIN\n"
        "  EXECUTE format('ALTER TABLE %I DROP COLUMN %I', 'accounts', 'legacy');\nEND\n$do$;"
    )
    result = lint_sql(sql)
    assert _by_rule(result, "ban-drop-column") == [(3, "high")]
    assert result.findings[0].table == "accounts"


def test_execute_of_a_variable_is_skipped() -> None:
    sql = "DO $$ DECLARE q text := 'DROP TABLE x'; BEGIN EXECUTE q; END $$;"
    assert lint_sql(sql).findings == []


def test_function_bodies_are_linted_but_do_not_run_now() -> None:
    sql = """\
CREATE FUNCTION reset_cache() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  CREATE TABLE cache (k text);
  TRUNCATE cache_entries;
END
$fn$;
CREATE INDEX cache_k_idx ON cache (k);
CREATE FUNCTION purge() RETURNS void LANGUAGE sql AS 'DELETE FROM a; TRUNCATE b';
"""
    result = lint_sql(sql, options=LintOptions(known_tables={"cache_entries", "cache", "b"}))
    assert _by_rule(result, "ban-truncate") == [(4, "critical"), (8, "critical")]
    # The CREATE TABLE in the body runs only when the function is called: `cache` stays an
    # existing table for the statement after it.
    assert _by_rule(result, "require-concurrent-index-creation") == [(7, "medium")]


def test_plpgsql_syntax_error_is_reported_at_the_block() -> None:
    sql = "SELECT 1;\nDO $$\nBEGIN\n  ALTR TABLE t;\nEND $$;"
    result = lint_sql(sql, file="m.sql")
    assert _by_rule(result, "syntax-error") == [(2, "high")]
    assert result.errors == ['m.sql:2: syntax error at or near "ALTR" (in this DO block)']


def test_other_languages_are_not_parsed() -> None:
    sql = "DO LANGUAGE plpython3u $$ plpy.execute('DROP TABLE x') $$;"
    assert lint_sql(sql).findings == []


# Syntax errors -----------------------------------------------------------------------------------


def test_syntax_error_is_reported_with_file_and_line() -> None:
    sql = "DROP TABLE a;\n\nCREATE TABLE t (id int,);\nDROP TABLE b;"
    result = lint_sql(sql, file="db/0007.sql")
    assert result.errors == ['db/0007.sql:3: syntax error at or near ")"']
    (error,) = [f for f in result.findings if f.rule == "syntax-error"]
    assert (error.line, error.level, error.statement) == (3, Risk.high, "CREATE TABLE t (id int,);")
    # What precedes the broken statement is still linted; what follows cannot be.
    assert [f.table for f in result.findings if f.rule == "ban-drop-table"] == ["a"]


def test_syntax_error_at_end_of_input() -> None:
    result = lint_sql("SELECT 1;\n\nSELECT (\n")
    assert _by_rule(result, "syntax-error") == [(3, "high")]
    assert result.errors == ["<sql>:3: syntax error at end of input"]


def test_invalid_sql_in_an_execute_literal_is_a_syntax_error() -> None:
    sql = "DO $$\nBEGIN\n  EXECUTE 'ALTER TABLE t ADD COLUMN';\nEND $$;"
    result = lint_sql(sql)
    assert _by_rule(result, "syntax-error") == [(3, "high")]


# Suppressions ------------------------------------------------------------------------------------


def test_suppression_on_the_line_before_with_reason() -> None:
    sql = (
        "SET lock_timeout = '1s';\n"
        "-- gatekeeper:ignore ban-drop-column the column is unused since release 41\n"
        "ALTER TABLE accounts DROP COLUMN legacy;"
    )
    result = lint_sql(sql)
    assert result.findings == []
    (suppressed,) = result.suppressed
    assert (suppressed.rule, suppressed.line) == ("ban-drop-column", 3)
    assert suppressed.suppressed_reason == "the column is unused since release 41"


def test_suppression_at_the_end_of_the_line_names_several_rules() -> None:
    sql = (
        "ALTER TABLE accounts DROP COLUMN legacy; "
        "-- gatekeeper:ignore ban-drop-column, require-lock-timeout agreed in review #12\n"
        "ALTER TABLE orders DROP COLUMN legacy;\n"
    )
    result = lint_sql(sql)
    assert sorted(f.rule for f in result.suppressed) == ["ban-drop-column", "require-lock-timeout"]
    assert {f.suppressed_reason for f in result.suppressed} == {"agreed in review #12"}
    # The trailing comment is about its own line, not the next statement.
    assert _by_rule(result, "ban-drop-column") == [(2, "high")]


def test_suppression_inside_a_multi_line_statement() -> None:
    sql = (
        "ALTER TABLE accounts -- gatekeeper:ignore ban-drop-column emptied in release 40\n"
        "  DROP COLUMN legacy;\n"
        "ALTER TABLE orders DROP COLUMN legacy;"
    )
    result = lint_sql(sql)
    assert [(f.rule, f.line) for f in result.suppressed] == [("ban-drop-column", 1)]
    assert _by_rule(result, "ban-drop-column") == [(3, "high")]


def test_suppression_without_reason_is_a_finding_and_not_applied() -> None:
    sql = "-- gatekeeper:ignore ban-truncate\nTRUNCATE sessions;"
    result = lint_sql(sql)
    assert _by_rule(result, "invalid-suppression") == [(1, "low")]
    assert "suppression needs a reason" in result.findings[0].message
    assert _by_rule(result, "ban-truncate") == [(2, "critical")]
    assert result.suppressed == []


def test_suppression_with_an_unknown_rule() -> None:
    sql = (
        "-- gatekeeper:ignore ban-truncat,ban-truncate sessions are disposable\nTRUNCATE sessions;"
    )
    result = lint_sql(sql)
    (invalid,) = [f for f in result.findings if f.rule == "invalid-suppression"]
    assert "unknown rule 'ban-truncat'" in invalid.message
    assert [f.rule for f in result.suppressed] == ["ban-truncate"]


def test_suppression_before_a_do_block_covers_its_statements() -> None:
    sql = (
        "-- gatekeeper:ignore ban-drop-table the table moved to the archive database\n"
        "DO $$\nBEGIN\n  DROP TABLE old_events;\nEND $$;"
    )
    result = lint_sql(sql)
    assert [(f.rule, f.line) for f in result.suppressed] == [("ban-drop-table", 4)]


def test_suppression_inside_a_do_block() -> None:
    sql = (
        "DO $$\nBEGIN\n  -- gatekeeper:ignore ban-drop-table archived first\n"
        "  DROP TABLE old_events;\n  DROP TABLE other_events;\nEND $$;"
    )
    result = lint_sql(sql)
    assert [(f.rule, f.line) for f in result.suppressed] == [("ban-drop-table", 4)]
    assert _by_rule(result, "ban-drop-table") == [(5, "critical")]


# Transactions and lock_timeout -------------------------------------------------------------------


def test_lock_timeout_finding_once_per_transaction_and_once_outside() -> None:
    sql = """\
ALTER TABLE a ADD COLUMN x int;
ALTER TABLE b ADD COLUMN x int;
BEGIN;
ALTER TABLE c ADD COLUMN x int;
ALTER TABLE c ADD COLUMN y int;
COMMIT;
BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE d ADD COLUMN x int;
COMMIT;
ALTER TABLE e ADD COLUMN x int;
"""
    result = lint_sql(sql)
    assert [f.line for f in result.findings if f.rule == "require-lock-timeout"] == [1, 4]


def test_session_lock_timeout_covers_the_rest_of_the_file_until_reset() -> None:
    sql = (
        "SET lock_timeout TO 3000;\nALTER TABLE a ADD COLUMN x int;\nRESET lock_timeout;\n"
        "ALTER TABLE b ADD COLUMN x int;"
    )
    assert _by_rule(lint_sql(sql), "require-lock-timeout") == [(4, "medium")]
    zero = "SET lock_timeout = '0';\nALTER TABLE a ADD COLUMN x int;"
    assert _by_rule(lint_sql(zero), "require-lock-timeout") == [(2, "medium")]


def test_single_transaction_option_wraps_the_file() -> None:
    sql = "ALTER TABLE a ADD COLUMN x int;\nALTER TABLE b ADD COLUMN y int;"
    assert _by_rule(lint_sql(sql), "multiple-table-locks-in-transaction") == []
    wrapped = lint_sql(sql, options=LintOptions(single_transaction=True))
    assert _by_rule(wrapped, "multiple-table-locks-in-transaction") == [(2, "medium")]


# Options -----------------------------------------------------------------------------------------


def test_known_tables_decide_which_tables_exist() -> None:
    sql = "CREATE INDEX i1 ON accounts (email);\nCREATE INDEX i2 ON public.brand_new (x);"
    result = lint_sql(sql, options=LintOptions(known_tables={"public.accounts"}))
    assert [f.table for f in result.findings if f.rule.startswith("require-concurrent")] == [
        "accounts"
    ]
    everything = lint_sql(sql)
    assert len(_by_rule(everything, "require-concurrent-index-creation")) == 2


def test_create_table_if_not_exists_may_find_the_table_already_there() -> None:
    # A start-up migration's second run, or an upgrade from a release that had the table:
    # IF NOT EXISTS created nothing, and the index build locks a table with rows.
    sql = "CREATE TABLE IF NOT EXISTS events (at timestamptz);\nCREATE INDEX i ON events (at);"
    assert _by_rule(lint_sql(sql), "require-concurrent-index-creation") == [(2, "medium")]
    known = lint_sql(sql, options=LintOptions(known_tables={"events"}))
    assert _by_rule(known, "require-concurrent-index-creation") == [(2, "medium")]
    # The base branch has no such table: the migration creates it, nobody else sees it yet.
    absent = lint_sql(sql, options=LintOptions(known_tables={"accounts"}))
    assert _by_rule(absent, "require-concurrent-index-creation") == []
    plain = sql.replace(" IF NOT EXISTS", "")
    assert _by_rule(lint_sql(plain), "require-concurrent-index-creation") == []


def test_drop_view_waits_for_its_readers() -> None:
    result = lint_sql("DROP VIEW IF EXISTS account_balances;")
    assert _by_rule(result, "require-lock-timeout") == [(1, "medium")]


def test_table_names_match_across_schemas_when_one_side_has_none() -> None:
    sql = "CREATE INDEX i1 ON app.accounts (email);\nCREATE INDEX i2 ON billing.invoices (n);"
    options = LintOptions(known_tables={"accounts", "app.invoices"}, table_rows={"app.accounts": 2})
    result = lint_sql(sql, options=options)
    # search_path is unknown: `accounts` may be app.accounts, but app.invoices is not billing's.
    assert [f.table for f in result.findings if f.rule.startswith("require-concurrent")] == [
        "app.accounts"
    ]
    assert result.findings[0].message.endswith("(app.accounts: ~2 rows)")


def test_twin_statements_on_one_line_of_a_do_block_keep_their_columns() -> None:
    sql = "DO $$ BEGIN DROP TABLE a; DROP TABLE a; END $$;"
    result = lint_sql(sql)
    assert [f.column for f in result.findings if f.rule == "ban-drop-table"] == [13, 27]


def test_renamed_existing_table_still_exists() -> None:
    sql = "ALTER TABLE accounts RENAME TO customers;\nCREATE INDEX i ON customers (email);"
    result = lint_sql(sql, options=LintOptions(known_tables={"accounts"}))
    assert _by_rule(result, "require-concurrent-index-creation") == [(2, "medium")]


def test_table_rows_scale_the_level_of_scans_and_rewrites_only() -> None:
    sql = "CREATE INDEX i ON events (at);\nALTER TABLE events RENAME COLUMN at TO happened_at;"
    options = LintOptions(table_rows={"events": 40_000_000})
    result = lint_sql(sql, options=options)
    (index,) = [f for f in result.findings if f.rule == "require-concurrent-index-creation"]
    assert index.level is Risk.high
    assert "events: ~40,000,000 rows" in index.message
    (rename,) = [f for f in result.findings if f.rule == "renaming-column"]
    assert rename.level is Risk.high  # its default: a rename is instant at any size
    small = lint_sql(sql, options=LintOptions(table_rows={"events": 5_000}))
    assert _by_rule(small, "require-concurrent-index-creation") == [(1, "low")]
    assert _by_rule(small, "renaming-column") == [(2, "high")]  # breaks code at any size
    unknown = lint_sql(sql)
    assert _by_rule(unknown, "require-concurrent-index-creation") == [(1, "medium")]


def test_severity_override() -> None:
    options = LintOptions(
        severity={"ban-drop-column": Risk.critical, "syntax-error": Risk.critical}
    )
    result = lint_sql("ALTER TABLE a DROP COLUMN b;\nSELECT (", options=options)
    assert _by_rule(result, "ban-drop-column") == [(1, "critical")]
    assert _by_rule(result, "syntax-error") == [(2, "critical")]


def test_disabled_rules_are_kept_as_suppressed_with_the_reason() -> None:
    options = LintOptions(disabled={"require-lock-timeout": "the runner sets lock_timeout"})
    result = lint_sql("ALTER TABLE a DROP COLUMN b;", options=options)
    assert [f.rule for f in result.findings] == ["ban-drop-column"]
    (suppressed,) = result.suppressed
    assert suppressed.rule == "require-lock-timeout"
    assert suppressed.suppressed_reason == "the runner sets lock_timeout"


def test_options_reject_unknown_rule_ids() -> None:
    with pytest.raises(ValidationError, match="ban-drop-colum"):
        LintOptions(disabled={"ban-drop-colum": "typo"})
    with pytest.raises(ValidationError, match="nope"):
        LintOptions(severity={"nope": Risk.low})


@pytest.mark.parametrize(("pg_version", "expected"), [(10, [(1, "medium")]), (11, []), (18, [])])
def test_constant_default_rewrites_only_before_11(
    pg_version: int, expected: list[tuple[int, str]]
) -> None:
    sql = "ALTER TABLE a ADD COLUMN active boolean DEFAULT true;"
    result = lint_sql(sql, options=LintOptions(pg_version=pg_version))
    assert _by_rule(result, "adding-field-with-default") == expected


@pytest.mark.parametrize("pg_version", [10, 11, 18])
def test_volatile_default_rewrites_on_every_version(pg_version: int) -> None:
    sql = "ALTER TABLE a ADD COLUMN r float8 DEFAULT random();"
    result = lint_sql(sql, options=LintOptions(pg_version=pg_version))
    assert _by_rule(result, "adding-field-with-default") == [(1, "medium")]


@pytest.mark.parametrize(("pg_version", "expected"), [(11, [(2, "high")]), (12, []), (18, [])])
def test_enum_add_value_in_transaction_depends_on_version(
    pg_version: int, expected: list[tuple[int, str]]
) -> None:
    sql = "BEGIN;\nALTER TYPE status ADD VALUE 'archived';\nCOMMIT;"
    result = lint_sql(sql, options=LintOptions(pg_version=pg_version))
    assert _by_rule(result, "adding-enum-value-in-transaction") == expected


# Registry and documentation ----------------------------------------------------------------------


def test_at_least_twenty_rules_one_module_each_named_after_the_rule() -> None:
    assert len(RULES) >= 20
    rules_dir = Path(__file__).parents[3] / "bot" / "judging" / "lint" / "rules"
    files = {p.stem for p in rules_dir.glob("*.py") if not p.stem.startswith("_")}
    assert files == {rule_id.replace("-", "_") for rule_id in RULES}
    for module in MODULES:
        assert module.__name__.rsplit(".", 1)[1] == module.RULE.id.replace("-", "_")
        assert module.__doc__, module.__name__


def test_rules_markdown_lists_every_rule() -> None:
    table = rules_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = [re.match(r"\| `([^`]+)`", row)[1] for row in rows]
    assert listed == [*RULES, *ENGINE_FINDINGS]
    assert "| `ban-drop-table` | critical | ACCESS EXCLUSIVE | no |" in table
    assert "| `adding-field-with-default` | medium | ACCESS EXCLUSIVE | yes |" in table


def test_explain() -> None:
    text = explain("require-concurrent-index-creation")
    assert text.startswith("require-concurrent-index-creation: ")
    assert "Lock: SHARE" in text and "CONCURRENTLY" in text
    assert "syntax-error" in explain("syntax-error")
    with pytest.raises(KeyError):
        explain("no-such-rule")

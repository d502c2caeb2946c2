"""Gatekeeper's migration linter against Squawk, and its speed, over tests/data/migrations/.

    .venv/bin/pip install -e '.[test,bench]'     # squawk-cli ships the `squawk` binary
    .venv/bin/python bench/lint_compare.py [--repeat N] [--no-speed] [--details]

Comparison: Squawk (`squawk --reporter json`, its default rule set) and
`bot.judging.lint.lint_sql` run over every corpus file. Squawk's rule names are mapped to
Gatekeeper's through FAMILIES below; for each family the script prints how many files both
flag, only Squawk flags, only Gatekeeper flags. A Squawk finding whose family's Gatekeeper
rules are all absent from that file is a *miss*. A miss is explained when
tests/data/migrations/README.md lists it (table between `<!-- squawk-explained:begin -->` and
`<!-- squawk-explained:end -->`: Squawk rule, files, why); a Squawk rule that maps to no
Gatekeeper rule must be listed in the README's table of rules
Gatekeeper deliberately does not have (`<!-- squawk-unmapped:begin -->` ...). Exit 1 when a
miss or an unmapped rule is unexplained, 2 when Squawk is not installed, 0 otherwise.

Speed: each file is linted `--repeat` times (after one warm-up pass over the corpus); the
median run is the file's time. Statements are counted as PostgreSQL's parser splits the file
(a DO block or a function is one statement, although the linter parses and checks its body
too). Printed: total time / total statements, and the 95th percentile over files of (file
time / file statements), against the target of 5 ms per statement. Like the other benchmarks
it is a measurement: a missed speed target is printed, not an exit code.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from pglast import parse_sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.judging.lint import RULES, LintOptions, lint_sql  # noqa: E402

CORPUS = REPO / "tests" / "data" / "migrations"
README = CORPUS / "README.md"
TARGET_MS = 5.0

# Rule families: (name, Squawk rules, Gatekeeper rules). A Squawk finding is matched on a file
# when Gatekeeper reports any rule of a family that holds the Squawk rule. Squawk rules that
# are not in any family are listed, with the reason, in the corpus README.
FAMILIES: list[tuple[str, frozenset[str], frozenset[str]]] = [
    (name, frozenset(squawk), frozenset(gatekeeper))
    for name, squawk, gatekeeper in [
        (
            "volatile default / rewrite",
            ["adding-field-with-default"],
            ["adding-field-with-default"],
        ),
        ("NOT NULL column, no default", ["adding-required-field"], ["adding-required-field"]),
        ("SET NOT NULL scan", ["adding-not-nullable-field"], ["adding-not-nullable-field"]),
        (
            "foreign key validation",
            ["adding-foreign-key-constraint"],
            ["adding-foreign-key-constraint"],
        ),
        (
            # Squawk reports FOREIGN KEY, UNIQUE and PRIMARY KEY additions here too.
            "constraint without NOT VALID",
            ["constraint-missing-not-valid"],
            [
                "constraint-missing-not-valid",
                "adding-foreign-key-constraint",
                "disallowed-unique-constraint",
            ],
        ),
        (
            "UNIQUE / PRIMARY KEY index build",
            ["disallowed-unique-constraint", "adding-serial-primary-key-field"],
            ["disallowed-unique-constraint"],
        ),
        (
            "domain constraint",
            ["ban-alter-domain-with-add-constraint"],
            ["ban-alter-domain-with-add-constraint"],
        ),
        (
            "index build",
            ["require-concurrent-index-creation"],
            ["require-concurrent-index-creation"],
        ),
        (
            "index drop",
            ["require-concurrent-index-deletion"],
            ["require-concurrent-index-deletion"],
        ),
        ("reindex", ["require-concurrent-reindex"], ["require-concurrent-reindex"]),
        (
            "partition detach",
            ["require-concurrent-partition-detach"],
            ["require-concurrent-partition-detach"],
        ),
        (
            "CONCURRENTLY in a transaction",
            ["ban-concurrent-index-creation-in-transaction"],
            ["ban-concurrent-index-creation-in-transaction"],
        ),
        (
            "column type change",
            ["changing-column-type"],
            ["changing-column-type", "narrowing-column-type"],
        ),
        ("column rename", ["renaming-column"], ["renaming-column"]),
        ("table rename", ["renaming-table"], ["renaming-table"]),
        ("column drop", ["ban-drop-column"], ["ban-drop-column"]),
        ("default drop", ["ban-drop-default"], ["ban-drop-default"]),
        ("table drop", ["ban-drop-table"], ["ban-drop-table"]),
        ("schema drop", ["ban-drop-schema"], ["ban-drop-schema"]),
        ("database drop", ["ban-drop-database"], ["ban-drop-database"]),
        ("truncate", ["ban-truncate-cascade"], ["ban-truncate"]),
        ("VACUUM FULL", [], ["ban-vacuum-full"]),
        ("CLUSTER", [], ["ban-cluster"]),
        ("enum value used in its transaction", [], ["adding-enum-value-in-transaction"]),
        (
            "lock_timeout",
            ["require-lock-timeout", "require-timeout-settings"],
            ["require-lock-timeout"],
        ),
        ("several tables locked", [], ["multiple-table-locks-in-transaction"]),
        ("re-runnable statements", ["prefer-robust-stmts"], ["prefer-robust-stmts"]),
        ("extension", [], ["create-extension"]),
        ("identity over serial", ["prefer-identity"], ["prefer-identity"]),
        (
            "bigint",
            ["prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-big-int"],
            ["prefer-bigint-over-int"],
        ),
        ("timestamptz", ["prefer-timestamp-tz", "prefer-timestamptz"], ["prefer-timestamptz"]),
        ("char(n)", ["ban-char-field"], ["ban-char-field"]),
        ("syntax error", ["syntax-error"], ["syntax-error"]),
    ]
]
SQUAWK_TO_GATEKEEPER: dict[str, frozenset[str]] = {}
for _name, _squawk, _gatekeeper in FAMILIES:
    for _rule in _squawk:
        SQUAWK_TO_GATEKEEPER[_rule] = SQUAWK_TO_GATEKEEPER.get(_rule, frozenset()) | _gatekeeper

LIVE_ONLY = (
    "Only a live database gives Gatekeeper: the locks each statement actually took and waited "
    "for (pg_locks during the run), which tables were rewritten (relfilenode changes) and how "
    "long each statement ran, the DDL the API ran at start-up (event triggers and the statement "
    "log, not only .sql files), whether the migration is idempotent (applied twice), the "
    "catalog diff and its rollback, and dropped or renamed columns that the code still "
    "references (the API's own requests and checks failing)."
)


@dataclass
class CorpusFile:
    path: str
    sql: str
    options: dict[str, Any]


@dataclass
class Comparison:
    gatekeeper: dict[str, set[str]] = field(default_factory=dict)
    squawk: dict[str, set[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def corpus_options(sql: str) -> dict[str, Any]:
    """`-- lint-options: require_idempotent=true, pg_version=11` on a line of its own."""
    match = re.search(r"^--\s*lint-options:(.*)$", sql, re.M)
    options: dict[str, Any] = {}
    for pair in match.group(1).split(",") if match else []:
        key, _, value = pair.strip().partition("=")
        options[key.strip()] = json.loads(value.strip())
    return options


def load_corpus() -> list[CorpusFile]:
    return [
        CorpusFile(p.relative_to(CORPUS).as_posix(), p.read_text(), corpus_options(p.read_text()))
        for p in sorted(CORPUS.rglob("*.sql"))
    ]


def readme_table(marker: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table between `<!-- marker:begin -->` and its end."""
    text = README.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{README}: no {begin} ... {end} block")
    block = text[text.index(begin) + len(begin) : text.index(end)]
    rows = []
    for line in block.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= {"-", ":"} or cells[0].lower().startswith("squawk"):
            continue
        rows.append(cells)
    return rows


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def explained_misses() -> list[tuple[str, str, str]]:
    """(Squawk rule, corpus file or glob, why Gatekeeper deliberately does not flag it there)."""
    return [
        (rule, pattern, cells[-1])
        for cells in readme_table("squawk-explained")
        for rule in _ticked(cells[0])
        for pattern in _ticked(cells[1])
    ]


def explanation(explained: list[tuple[str, str, str]], rule: str, path: str) -> str | None:
    return next((why for r, p, why in explained if r == rule and fnmatch(path, p)), None)


def unmapped_rules() -> dict[str, str]:
    """Squawk rules Gatekeeper deliberately does not have -> why."""
    return {
        rule: cells[-1] for cells in readme_table("squawk-unmapped") for rule in _ticked(cells[0])
    }


def gatekeeper_rules(corpus: list[CorpusFile]) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    found, errors = {}, {}
    for item in corpus:
        result = lint_sql(item.sql, file=item.path, options=LintOptions(**item.options))
        found[item.path] = {f.rule for f in result.findings}
        if result.errors:
            errors[item.path] = result.errors
    return found, errors


def squawk_binary() -> str | None:
    beside = Path(sys.executable).with_name("squawk")
    return str(beside) if beside.exists() else shutil.which("squawk")


def squawk_rules(binary: str, corpus: list[CorpusFile]) -> dict[str, set[str]]:
    """Squawk's default rules, run once per (server version, wrapped in a transaction) group."""
    groups: dict[tuple[int, bool], list[str]] = defaultdict(list)
    for item in corpus:
        options = LintOptions(**item.options)
        groups[(options.pg_version, options.single_transaction)].append(item.path)
    found: dict[str, set[str]] = {item.path: set() for item in corpus}
    for (pg_version, wrapped), paths in sorted(groups.items()):
        command = [binary, "--reporter", "json", f"--pg-version={pg_version}.0"]
        command += ["--assume-in-transaction"] if wrapped else []
        run = subprocess.run(
            [*command, *paths], cwd=CORPUS, capture_output=True, text=True, check=False
        )
        # Exit status 1 means "found something"; anything else, or no JSON, is a failure.
        if run.returncode not in (0, 1) or not run.stdout.strip():
            raise SystemExit(f"squawk failed ({run.returncode}): {run.stderr.strip()}")
        for violation in json.loads(run.stdout):
            found[Path(violation["file"]).as_posix()].add(violation["rule_name"])
    return found


def _label(rules: list[str], width: int) -> str:
    """As many rule names as fit in `width`, then `+N` for the rest."""
    if not rules:
        return "(none by default)"
    shown = [rules[0]]
    for rule in rules[1:]:
        if len(", ".join([*shown, rule])) + len(" +9") > width:
            break
        shown.append(rule)
    rest = len(rules) - len(shown)
    return ", ".join(shown) + (f" +{rest}" if rest else "")


def compare(corpus: list[CorpusFile], binary: str, details: bool) -> int:
    gatekeeper, errors = gatekeeper_rules(corpus)
    squawk = squawk_rules(binary, corpus)
    explained = explained_misses()
    unmapped = unmapped_rules()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Corpus: {len(corpus)} files in {CORPUS.relative_to(REPO)}; {version} (default rules)")
    if errors:
        print(f"Gatekeeper syntax errors: {errors}")

    print("\nPer rule family, files flagged:")
    header = f"  {'family':<36} {'Squawk rules':<44} {'both':>4} {'Sq only':>7} {'GK only':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, squawk_set, gatekeeper_set in FAMILIES:
        by_squawk = {p for p, rules in squawk.items() if rules & squawk_set}
        by_gatekeeper = {p for p, rules in gatekeeper.items() if rules & gatekeeper_set}
        label = _label(sorted(squawk_set), 44)
        print(
            f"  {name:<36} {label:<44} {len(by_squawk & by_gatekeeper):>4} "
            f"{len(by_squawk - by_gatekeeper):>7} {len(by_gatekeeper - by_squawk):>7}"
        )
        if details:
            for tag, paths in (
                ("only Squawk", by_squawk - by_gatekeeper),
                ("only Gatekeeper", by_gatekeeper - by_squawk),
            ):
                for path in sorted(paths):
                    print(f"      {tag}: {path}")

    misses: list[tuple[str, str, str | None]] = []
    unknown: dict[str, list[str]] = defaultdict(list)
    no_counterpart: dict[str, list[str]] = defaultdict(list)
    for path, rules in sorted(squawk.items()):
        for rule in sorted(rules):
            if rule in SQUAWK_TO_GATEKEEPER:
                if not SQUAWK_TO_GATEKEEPER[rule] & gatekeeper[path]:
                    misses.append((rule, path, explanation(explained, rule, path)))
            elif rule in unmapped:
                no_counterpart[rule].append(path)
            else:
                unknown[rule].append(path)

    print("\nSquawk rules Gatekeeper deliberately does not have (why: corpus README.md):")
    for rule, paths in sorted(no_counterpart.items()):
        print(f"  {rule:<36} {len(paths):>3} file(s)")

    print("\nSquawk findings Gatekeeper does not share (mapped rule absent from the file):")
    for rule, path, why in misses:
        status = "explained" if why else "UNEXPLAINED"
        print(f"  {status:<11} {rule:<36} {path}")
        if why and details:
            print(f"              {why}")
    unexplained = [m for m in misses if m[2] is None]

    used = {
        (r, p)
        for r, p, _ in explained
        for rule, path, _ in misses
        if r == rule and fnmatch(path, p)
    }
    stale = sorted({(r, p) for r, p, _ in explained} - used)
    if stale:
        print("\nREADME explanations that match no miss any more (remove them):")
        for rule, pattern in stale:
            print(f"  {rule:<36} {pattern}")

    if unknown:
        print("\nUNEXPLAINED: Squawk rules neither mapped (FAMILIES) nor listed in the README:")
        for rule, paths in sorted(unknown.items()):
            print(f"  {rule:<36} {', '.join(paths)}")

    shared = {
        rule
        for path, rules in squawk.items()
        for squawk_rule in rules
        for rule in SQUAWK_TO_GATEKEEPER.get(squawk_rule, frozenset()) & gatekeeper[path]
    }
    gatekeeper_only = sorted(set().union(*gatekeeper.values()) - shared)
    print(f"\nGatekeeper rules no Squawk finding matched on any file: {', '.join(gatekeeper_only)}")
    print(f"\n{LIVE_ONLY}")

    print(
        f"\nMisses: {len(misses)} ({len(misses) - len(unexplained)} explained, "
        f"{len(unexplained)} unexplained); unmapped Squawk rules unexplained: {len(unknown)}"
    )
    return 1 if unexplained or unknown else 0


def speed(corpus: list[CorpusFile], repeat: int) -> None:
    statements = {item.path: max(1, len(parse_sql(item.sql))) for item in corpus}
    options = {item.path: LintOptions(**item.options) for item in corpus}
    for item in corpus:  # warm-up: imports, pglast's first calls
        lint_sql(item.sql, file=item.path, options=options[item.path])
    per_file: dict[str, float] = {}
    for item in corpus:
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            lint_sql(item.sql, file=item.path, options=options[item.path])
            runs.append(time.perf_counter() - start)
        per_file[item.path] = statistics.median(runs)
    total_ms = sum(per_file.values()) * 1000
    count = sum(statements.values())
    normalised = sorted(per_file[p] * 1000 / statements[p] for p in per_file)
    p95 = normalised[min(len(normalised) - 1, round(0.95 * (len(normalised) - 1)))]
    slowest = max(per_file, key=lambda p: per_file[p] / statements[p])
    mean = total_ms / count
    print(
        f"\nSpeed (parse + rule evaluation, {len(RULES)} rules, median of {repeat} runs per file):"
    )
    print(f"  {count} statements in {len(corpus)} files: {total_ms:.1f} ms in total")
    print(f"  mean {mean:.3f} ms per statement; p95 over files {p95:.3f} ms per statement")
    print(
        f"  slowest file per statement: {slowest} "
        f"({per_file[slowest] * 1000 / statements[slowest]:.3f} ms)"
    )
    verdict = "met" if max(mean, p95) < TARGET_MS else "NOT met"
    print(f"  target: under {TARGET_MS:g} ms per statement: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per file (speed)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument("--details", action="store_true", help="list files and reasons")
    args = parser.parse_args(argv)
    corpus = load_corpus()
    binary = squawk_binary()
    if binary is None:
        print("squawk not found: .venv/bin/pip install -e '.[test,bench]'", file=sys.stderr)
        return 2
    status = compare(corpus, binary, args.details)
    if not args.no_speed:
        speed(corpus, args.repeat)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The report's stage timeline: when each stage began, which ran side by side, and the
critical path the run waited on."""

from __future__ import annotations

from typing import Any

from bot.judging.verdict import Stage, Verdict
from bot.reporting import render_markdown
from tests.app.test_history import verdict


def report(stages: list[Stage] | list[dict[str, Any]]) -> str:
    """The report of an approved run with these stages (objects, or JSON as stored)."""
    approved = verdict().model_dump(mode="json")
    return render_markdown(Verdict.model_validate({**approved, "stages": stages}))


def test_the_report_names_the_critical_path_and_what_ran_side_by_side():
    text = report(
        [
            Stage(name="merge", seconds=0.4, ok=True, started=0.0),
            Stage(name="build base", seconds=2.0, ok=True, started=0.52, within="build"),
            Stage(name="build merge", seconds=6.0, ok=True, started=0.51, within="build"),
            Stage(name="build", seconds=6.1, ok=True, started=0.5),
            Stage(name="migrate", seconds=1.25, ok=False, started=6.7),
        ]
    )
    assert (
        "**Critical path**, the stages the run waited on: merge → build (build merge) → migrate"
        in text
    )
    rows = text[text.index("| stage | started (s) |") :].splitlines()[2:7]
    assert rows == [
        "| merge | 0.00 | 0.40 | yes | **yes** |",
        "| build | 0.50 | 6.10 | yes | **yes** |",
        "| ↳ build merge | 0.51 | 6.00 | yes | **yes**, beside build base |",
        "| ↳ build base | 0.52 | 2.00 | yes | no, beside build merge |",
        "| migrate | 6.70 | 1.25 | no | **yes** |",
    ]


def test_an_old_verdict_without_start_times_still_renders():
    # As the App's store holds verdicts written before stages carried `started`.
    text = report(
        [
            {"name": "merge", "seconds": 0.5, "ok": True},
            {"name": "build", "seconds": 2.0, "ok": True},
        ]
    )
    assert "(start times not recorded: stages laid end to end): merge → build" in text
    assert "| build | 0.50 | 2.00 | yes | **yes** |" in text

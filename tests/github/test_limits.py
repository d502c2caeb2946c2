"""GitHub's limits are met by construction: absurd verdicts and reports still fit (no server)."""

from __future__ import annotations

import pytest

from bot.engine.job import Job
from bot.github.limits import (
    ANNOTATIONS_MAX,
    CHECK_TEXT_LIMIT,
    COMMENT_LIMIT,
    REPORT_MARKER,
    STATUS_DESCRIPTION_LIMIT,
    annotations,
    batches,
    check_run_output,
    status_description,
    status_state,
    sticky_comment,
    truncate_markdown,
    truncate_utf8,
    utf8_size,
)
from bot.judging.verdict import Criterion, Decision, Finding, Risk, Status, Verdict
from bot.reporting import render_markdown

# 1-, 2-, 3- and 4-byte characters, and a combining mark.
MIXED = "aé€😀e\u0301"
URL = "https://gatekeeper.example/runs/7/report"


def make_verdict(
    decision: Decision = Decision.approve,
    risk: Risk | None = Risk.low,
    criteria: list[Criterion] | None = None,
    findings: list[Finding] | None = None,
    summary: str = "All good.",
) -> Verdict:
    job = Job(
        repository="acme/api",
        base_ref="main",
        head_ref="builder/P1-SCHEMA-002",
        base_sha="a" * 40,
        head_sha="b" * 40,
        pr_number=7,
    )
    return Verdict(
        decision=decision,
        risk=risk,
        summary=summary,
        reasons=["because"],
        job=job.model_dump(),
        criteria=criteria if criteria is not None else [],
        findings=findings or [],
    )


def crit(cid: str, status: Status = Status.passed, evidence: str = "ok") -> Criterion:
    return Criterion(id=cid, title=f"title of {cid}", status=status, evidence=evidence)


def finding(line: int | None = 3, level: Risk = Risk.medium, file: str | None = "m/1.sql"):
    return Finding(
        rule="ban-drop-column",
        level=level,
        message="drops a column",
        file=file,
        line=line,
        column=5,
        safe_alternative="stop using it first",
    )


# -- truncation --------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["", "…", " [cut]", "😀"])
def test_truncate_utf8_cuts_on_character_boundaries_at_every_limit(marker):
    text = MIXED * 20
    for limit in range(utf8_size(text) + 2):
        cut = truncate_utf8(text, limit, marker)
        assert utf8_size(cut) <= limit
        if utf8_size(text) <= limit:
            assert cut == text
        elif utf8_size(marker) < limit:
            assert cut.endswith(marker)
            assert text.startswith(cut[: len(cut) - len(marker)])


def test_truncate_markdown_closes_an_open_code_block_before_its_marker():
    report = "intro\n\n```sql\n" + "SELECT 'é😀';\n" * 10_000 + "```\n\nafter\n"
    cut = truncate_markdown(report, 5_000, "\n\nread the rest\n")
    assert utf8_size(cut) <= 5_000
    assert cut.endswith("```\n\n\nread the rest\n")
    assert cut.count("```") == 2


def test_truncate_markdown_leaves_a_fitting_text_alone():
    assert truncate_markdown("short", 10, "marker that is long") == "short"


# -- commit status -----------------------------------------------------------------------


def test_only_approve_is_success():
    assert status_state(Decision.approve) == "success"
    assert status_state(Decision.review) == "failure"
    assert status_state(Decision.reject) == "failure"
    assert status_state(Decision.error) == "error"


def test_status_descriptions_read_like_the_merge_box():
    passed = [crit(f"c{i}") for i in range(34)]
    assert status_description(make_verdict(criteria=passed)) == "approve · risk low · 34/34 passed"
    review = make_verdict(Decision.review, Risk.high, criteria=passed)
    assert status_description(review).startswith("review needed · risk high")
    failed = [crit(f"lifecycle/s{i}", Status.failed) for i in range(4)]
    reject = make_verdict(Decision.reject, Risk.high, criteria=[*failed, *passed])
    assert status_description(reject) == "reject · risk high · failed: lifecycle/s0, +3"
    error = make_verdict(Decision.error, None, summary="PostgreSQL did not\nstart")
    assert status_description(error) == "error · PostgreSQL did not start"


@pytest.mark.parametrize("cid", ["x" * 5_000, "日本語" * 1_000, "😀" * 1_000, MIXED * 300])
def test_status_description_fits_140_for_very_long_criterion_ids(cid):
    failed = [crit(cid, Status.failed), crit("b", Status.skipped), crit("c", Status.failed)]
    description = status_description(make_verdict(Decision.reject, Risk.critical, failed))
    assert utf8_size(description) <= STATUS_DESCRIPTION_LIMIT
    assert description.startswith("reject · risk critical · failed: ")
    assert description.endswith("…, +2")


def test_status_description_fits_for_a_huge_error_summary():
    verdict = make_verdict(Decision.error, None, summary=MIXED * 10_000)
    assert utf8_size(status_description(verdict)) <= STATUS_DESCRIPTION_LIMIT


# -- check run and comment ---------------------------------------------------------------


def huge_verdict() -> Verdict:
    """A verdict far over every GitHub limit: long multibyte evidence, thousands of rows."""
    criteria = [crit(f"suite/step-{i}-{'é' * 50}", evidence=MIXED * 400) for i in range(3_000)]
    criteria[2_500] = crit("suite/the-one-that-failed", Status.failed, evidence="500 ≠ 201")
    findings = [finding(line=i + 1) for i in range(2_000)]
    return make_verdict(
        Decision.reject, Risk.high, criteria, findings, summary="😀 " + "very long " * 50_000
    )


def test_a_report_far_over_every_limit_still_fits():
    verdict = huge_verdict()
    report = render_markdown(verdict)
    assert utf8_size(report) > 20 * COMMENT_LIMIT

    output = check_run_output(verdict, report, URL)
    assert utf8_size(output["title"]) <= STATUS_DESCRIPTION_LIMIT
    for key in ("summary", "text"):
        assert utf8_size(output[key]) <= CHECK_TEXT_LIMIT
        assert output[key].rstrip().endswith(f"[the full report]({URL}).")

    comment = sticky_comment(report, REPORT_MARKER, URL)
    assert utf8_size(comment) <= COMMENT_LIMIT
    assert comment.startswith(REPORT_MARKER + "\n")
    assert URL in comment


def test_a_long_report_keeps_summary_and_failed_criteria_in_the_comment():
    criteria = [crit(f"suite/step-{i}", evidence="x" * 200) for i in range(1_000)]
    criteria[900] = crit("suite/the-one-that-failed", Status.failed, evidence="500 ≠ 201")
    verdict = make_verdict(Decision.reject, Risk.high, criteria, summary="Creating fails.")
    report = render_markdown(verdict)
    assert utf8_size(report) > COMMENT_LIMIT

    comment = sticky_comment(report, REPORT_MARKER, URL)
    assert utf8_size(comment) <= COMMENT_LIMIT
    assert comment.startswith(REPORT_MARKER)
    assert "# ❌ Gatekeeper: REJECT" in comment
    assert "## Summary\n\nCreating fails." in comment
    assert "## Criteria" in comment
    table = comment.split("## Criteria", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert "suite/the-one-that-failed" in rows[2]  # failures first, after the two header rows
    assert "more criteria in the full report" in comment
    assert "## Logs" not in comment


def test_a_short_report_is_the_comment_as_is():
    report = render_markdown(make_verdict(criteria=[crit("a")]))
    assert sticky_comment(report, REPORT_MARKER, None) == f"{REPORT_MARKER}\n{report}"


def test_check_run_summary_without_a_report_url_points_at_report_md():
    verdict = make_verdict(summary="x" * 100_000)
    output = check_run_output(verdict, "short report", None)
    assert output["text"] == "short report"
    assert output["summary"].rstrip().endswith("read the run's `report.md`.")


# -- annotations -------------------------------------------------------------------------


def test_annotations_have_githubs_shape_and_skip_what_is_not_a_file_line():
    findings = [
        finding(level=Risk.low),
        finding(level=Risk.critical, line=9),
        finding(file="(run at start-up)"),
        finding(file=None),
        finding(line=None),
        finding(file="../outside.sql"),
        finding(file="/abs/path.sql"),
        Finding(rule="r", level=Risk.high, message="", file="./db/2.sql", line=1),
    ]
    result = annotations(make_verdict(findings=findings))
    assert result == [
        {
            "path": "m/1.sql",
            "start_line": 9,
            "end_line": 9,
            "annotation_level": "failure",
            "message": "drops a column",
            "title": "ban-drop-column",
            "start_column": 5,
            "end_column": 5,
            "raw_details": "Safer: stop using it first",
        },
        {
            "path": "db/2.sql",
            "start_line": 1,
            "end_line": 1,
            "annotation_level": "failure",
            "message": "r",
            "title": "r",
        },
        {
            "path": "m/1.sql",
            "start_line": 3,
            "end_line": 3,
            "annotation_level": "notice",
            "message": "drops a column",
            "title": "ban-drop-column",
            "start_column": 5,
            "end_column": 5,
            "raw_details": "Safer: stop using it first",
        },
    ]


def test_annotations_are_batched_by_50_and_capped():
    result = annotations(make_verdict(findings=[finding(line=i + 1) for i in range(120)]))
    assert [len(batch) for batch in batches(result, 50)] == [50, 50, 20]
    many = annotations(make_verdict(findings=[finding(line=i + 1) for i in range(2_000)]))
    assert len(many) == ANNOTATIONS_MAX
    assert batches([], 50) == []
    with pytest.raises(ValueError):
        batches([1], 0)


def test_annotation_texts_fit_githubs_limits():
    long = Finding(
        rule="r" * 1_000,
        level=Risk.medium,
        message=MIXED * 10_000,
        file="a.sql",
        line=1,
        safe_alternative=MIXED * 10_000,
    )
    (annotation,) = annotations(make_verdict(findings=[long]))
    assert len(annotation["title"]) <= 255
    assert utf8_size(annotation["message"]) <= 64 * 1024
    assert utf8_size(annotation["raw_details"]) <= 64 * 1024

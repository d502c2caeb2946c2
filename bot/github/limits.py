"""GitHub's size limits, met by construction.

GitHub answers 422 to a payload over one of its limits, and a 422 while publishing would leave a
run without its final word on the pull request. So every text the bot sends is cut here, before
any request, by pure functions that tests can drive with absurd inputs.

Every limit is measured in UTF-8 bytes. GitHub documents some limits in characters and some in
bytes without saying how it counts characters; a UTF-8 byte count is never smaller than a count
of code points or of UTF-16 units, so a text within the byte limit is within every reading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from bot.judging.verdict import Decision, Finding, Risk, Status, Verdict
from bot.reporting.markdown import BADGES, RISK_BADGES, STATUS_BADGES

STATUS_DESCRIPTION_LIMIT = 140
CHECK_TEXT_LIMIT = 65_535  # output.summary and output.text, each
COMMENT_LIMIT = 65_536  # issue comment and review bodies
ANNOTATIONS_PER_REQUEST = 50
ANNOTATION_TITLE_LIMIT = 255
# GitHub allows 64 KB for message and raw_details; an annotation only points at the report,
# and a small cap keeps 50 of them in one request far from any body limit.
ANNOTATION_TEXT_LIMIT = 8_192
# Every batch of 50 is one more write against the installation's budget; past this many, the
# report (which lists every finding) is the place to read them.
ANNOTATIONS_MAX = 500
REPORT_MARKER = "<!-- gatekeeper:report -->"
ELLIPSIS = "…"

# How a finding's level shows in the diff: only risks the policy may block on are failures.
ANNOTATION_LEVELS = {
    Risk.low: "notice",
    Risk.medium: "warning",
    Risk.high: "failure",
    Risk.critical: "failure",
}
_DECISION_WORDS = {
    Decision.approve: "approve",
    Decision.review: "review needed",
    Decision.reject: "reject",
    Decision.error: "error",
}
_SUMMARY_CRITERIA_MAX = 20
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# Room kept for what truncate_markdown appends to close a cut code block and <details>.
_CLOSE_FENCE = "```\n"
_CLOSE_DETAILS = "</details>\n"

T = TypeVar("T")


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, limit_bytes: int, marker: str = "") -> str:
    """`text` if it fits in `limit_bytes`, else its longest prefix that fits with `marker` after it.

    The cut falls on a character boundary (a partly kept multibyte character is dropped).
    A marker longer than the limit is itself cut, so the result always fits.
    """
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    mark = marker.encode("utf-8")
    if len(mark) >= limit_bytes:
        return mark[: max(limit_bytes, 0)].decode("utf-8", errors="ignore")
    return data[: limit_bytes - len(mark)].decode("utf-8", errors="ignore") + marker


def fit_line(text: str, limit_bytes: int = STATUS_DESCRIPTION_LIMIT) -> str:
    """One line (whitespace collapsed) cut to `limit_bytes` with an ellipsis."""
    return truncate_utf8(" ".join(text.split()), limit_bytes, ELLIPSIS)


def truncate_markdown(text: str, limit_bytes: int, marker: str) -> str:
    """Like `truncate_utf8`, but cut at a line end and close a code block or `<details>` the cut
    left open, so the marker (usually a link to the full report) renders as text, not as code.
    """
    if utf8_size(text) <= limit_bytes:
        return text
    room = limit_bytes - utf8_size(marker) - utf8_size(_CLOSE_FENCE + _CLOSE_DETAILS)
    if room <= 0:
        return truncate_utf8(text, limit_bytes, marker)
    kept = truncate_utf8(text, room)
    line_end = kept.rfind("\n")
    kept = kept[: line_end + 1] if line_end >= 0 else kept + "\n"
    closers = ""
    if _open_fence(kept):
        closers += _CLOSE_FENCE
    if kept.count("<details") > kept.count("</details>"):
        closers += _CLOSE_DETAILS
    return kept + closers + marker


def _open_fence(markdown: str) -> bool:
    inside = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            inside = not inside
    return inside


# -- commit status ---------------------------------------------------------------------------


def status_state(decision: Decision) -> str:
    """The commit status state for a decision.

    Branch protection can only require a status to be `success`: anything else blocks the merge.
    A `review` decision must block (a person has to look first) without reading as a reject, so
    its state is `failure` and its description starts with "review needed", which is what the
    merge box shows. `error` is kept for the gate's own failures, which say nothing about the
    change.
    """
    return {
        Decision.approve: "success",
        Decision.review: "failure",
        Decision.reject: "failure",
        Decision.error: "error",
    }[decision]


def status_description(verdict: Verdict) -> str:
    """The one line the merge box shows, within 140 bytes whatever the criterion ids.

    e.g. "reject · risk high · failed: lifecycle/session-create, +3",
    "approve · risk low · 34/34 passed", "error · PostgreSQL did not start".
    """
    head = _DECISION_WORDS[verdict.decision]
    if verdict.risk is not None:
        head += f" · risk {verdict.risk}"
    if verdict.decision is Decision.error:
        return fit_line(f"{head} · {verdict.summary}")
    failed = verdict.failed_criteria()
    if failed:
        more = f", +{len(failed) - 1}" if len(failed) > 1 else ""
        lead = f"{head} · failed: "
        room = STATUS_DESCRIPTION_LIMIT - utf8_size(lead) - utf8_size(more)
        return fit_line(lead + fit_line(failed[0].id, room) + more)
    if verdict.criteria:
        passed = sum(c.status is Status.passed for c in verdict.criteria)
        return fit_line(f"{head} · {passed}/{len(verdict.criteria)} passed")
    return fit_line(f"{head} · {verdict.summary}")


# -- check run -------------------------------------------------------------------------------


def truncation_note(report_url: str | None) -> str:
    where = f"[the full report]({report_url})" if report_url else "the run's `report.md`"
    return f"\n\n---\n✂️ Cut to fit GitHub's size limit; read {where}.\n"


def check_run_output(
    verdict: Verdict, report_md: str, report_url: str | None = None
) -> dict[str, str]:
    """The check run's `output` (without annotations): title, summary and the report as text.

    The title is the status description (140 bytes at most); summary and text each fit
    GitHub's 65,535 limit, and a cut one ends with a link to the full report.
    """
    note = truncation_note(report_url)
    return {
        "title": status_description(verdict),
        "summary": truncate_markdown(_check_summary(verdict, report_url), CHECK_TEXT_LIMIT, note),
        "text": truncate_markdown(report_md, CHECK_TEXT_LIMIT, note),
    }


def _check_summary(verdict: Verdict, report_url: str | None) -> str:
    title = f"### {BADGES[verdict.decision.value]} {verdict.decision.value.upper()}"
    if verdict.risk is not None:
        title += f" · risk {RISK_BADGES[verdict.risk.value]} {verdict.risk.value.upper()}"
    lines = [title, "", " ".join(verdict.summary.split()), ""]
    lines += [f"- {' '.join(reason.split())}" for reason in verdict.reasons]
    failed = verdict.failed_criteria()
    if verdict.criteria:
        passed = sum(c.status is Status.passed for c in verdict.criteria)
        lines += ["", f"{passed} of {len(verdict.criteria)} criteria passed."]
    if failed:
        lines += ["", "Failed or did not run:"]
        for criterion in failed[:_SUMMARY_CRITERIA_MAX]:
            status = STATUS_BADGES[criterion.status.value]
            lines.append(f"- `{criterion.id}` {' '.join(criterion.title.split())} ({status})")
        if len(failed) > _SUMMARY_CRITERIA_MAX:
            lines.append(f"- … and {len(failed) - _SUMMARY_CRITERIA_MAX} more in the report")
    shown = min(len(_annotatable(verdict)), ANNOTATIONS_MAX)
    if shown < len(verdict.findings):
        lines += ["", f"{shown} of {len(verdict.findings)} findings are annotated on the diff."]
    if report_url:
        lines += ["", f"[Full report]({report_url})"]
    return "\n".join(lines) + "\n"


def annotations(verdict: Verdict, limit: int = ANNOTATIONS_MAX) -> list[dict[str, Any]]:
    """Check-run annotations for the findings that point at a line of a file in the repository.

    Findings without a file and line, or located at a pseudo-path such as "(run at start-up)",
    stay in the report only (GitHub rejects annotations on paths it cannot find). The riskiest
    come first, so the first batch carries what matters if a later one fails.
    """
    result = []
    for finding in _annotatable(verdict)[:limit]:
        annotation: dict[str, Any] = {
            "path": _repo_path(finding.file),
            "start_line": finding.line,
            "end_line": finding.line,
            "annotation_level": ANNOTATION_LEVELS[finding.level],
            "message": truncate_utf8(
                finding.message.strip() or finding.rule, ANNOTATION_TEXT_LIMIT, ELLIPSIS
            ),
            "title": truncate_utf8(finding.rule, ANNOTATION_TITLE_LIMIT, ELLIPSIS),
        }
        # GitHub takes columns only on single-line annotations, which these are.
        if finding.column is not None and finding.column >= 1:
            annotation["start_column"] = annotation["end_column"] = finding.column
        if finding.safe_alternative and finding.safe_alternative.strip() not in ("", "—"):
            annotation["raw_details"] = truncate_utf8(
                f"Safer: {finding.safe_alternative.strip()}", ANNOTATION_TEXT_LIMIT, ELLIPSIS
            )
        result.append(annotation)
    return result


def _annotatable(verdict: Verdict) -> list[Finding]:
    """The findings located on a line of a repository file, riskiest first."""
    located = [
        f
        for f in verdict.findings
        if f.line is not None and f.line >= 1 and _repo_path(f.file) and not f.suppressed_reason
    ]
    return sorted(located, key=lambda f: -f.level.rank)


def _repo_path(path: str | None) -> str | None:
    """`path` as a repository-relative file path, or None when it is not one."""
    if not path:
        return None
    cleaned = path.strip().removeprefix("./")
    if (
        not cleaned
        or cleaned.startswith(("(", "/", "<"))
        or "\\" in cleaned
        or "://" in cleaned
        or any(part in ("", ".", "..") for part in cleaned.split("/"))
    ):
        return None
    return cleaned


def batches(items: Sequence[T], size: int = ANNOTATIONS_PER_REQUEST) -> list[list[T]]:
    """`items` in consecutive lists of at most `size` (GitHub takes 50 annotations a request)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


# -- sticky comment --------------------------------------------------------------------------


def sticky_comment(
    report_md: str, marker: str = REPORT_MARKER, report_url: str | None = None
) -> str:
    """The pull request comment: the hidden marker first (how later runs find the comment to
    edit), then the report.

    A report over GitHub's 65,536 limit is not cut blindly: the comment keeps the report's
    heading, its Summary section and its Criteria table (failures first, rows dropped from the
    end when even that is too long), and links to the full report.
    """
    full = f"{marker}\n{report_md}"
    if utf8_size(full) <= COMMENT_LIMIT:
        return full
    head, sections = _sections(report_md)
    note = truncation_note(report_url)
    body = f"{marker}\n{head}{sections.get('Summary', '')}{note}\n"
    table = sections.get("Criteria", "")
    room = COMMENT_LIMIT - utf8_size(body)
    if table and room > 0:
        body += _fit_table(table, room)
    return truncate_markdown(body, COMMENT_LIMIT, note)


def _sections(markdown: str) -> tuple[str, dict[str, str]]:
    """The text before the first `## ` heading, and each level-2 section by its title
    (headings inside code blocks are not headings)."""
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current = head
    inside = False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line):
            inside = not inside
        elif not inside and line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        current.append(line)
    return "".join(head), {title: "".join(lines) for title, lines in sections.items()}


def _fit_table(section: str, limit_bytes: int) -> str:
    """A section holding a Markdown table, within `limit_bytes`: rows of criteria that did not
    pass first, then as many rows as fit, then a line saying how many were left out."""
    lines = section.splitlines(keepends=True)
    table_at = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    preamble = lines[: table_at + 2]  # the text before the table, its header and separator row
    rows = [line for line in lines[table_at + 2 :] if line.startswith("|")]
    passed = STATUS_BADGES[Status.passed.value]
    rows.sort(key=lambda row: passed in row)
    kept = "".join(preamble)
    for index, row in enumerate(rows):
        after = len(rows) - index - 1
        if utf8_size(kept + row + _left_out(after)) > limit_bytes:
            # The previous row was kept only with room for this very line after it.
            return truncate_utf8(kept + _left_out(after + 1), limit_bytes)
        kept += row
    return truncate_utf8(kept, limit_bytes)


def _left_out(count: int) -> str:
    return f"\n*… {count} more criteria in the full report.*\n" if count else ""

"""What the step hands back to the workflow, in the formats GitHub reads: outputs in
`$GITHUB_OUTPUT`, the report in `$GITHUB_STEP_SUMMARY` (cut to GitHub's 1 MiB), and
`::error`/`::warning` workflow commands that annotate migration lines. Which values go in
them is `bot.actions.run`'s to say.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from bot.github.limits import annotations, truncate_markdown, utf8_size
from bot.judging.verdict import Verdict

# GitHub refuses a step summary over 1 MiB (the step then shows an error instead of it).
STEP_SUMMARY_LIMIT = 1024 * 1024
# GitHub shows at most 10 errors and 10 warnings per step and 50 annotations per job; the
# report lists every finding, so a few more than shown are emitted and the rest left out.
ANNOTATIONS_MAX = 50
_LEVEL_COMMANDS = {"failure": "error", "warning": "warning", "notice": "notice"}


def escape_data(text: str) -> str:
    """A workflow command's message: GitHub unescapes %25, %0D and %0A."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which end a property."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: object) -> str:
    props = ",".join(
        f"{name}={escape_property(str(value))}"
        for name, value in properties.items()
        if value is not None
    )
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def annotation_commands(verdict: Verdict, path_prefix: str = "") -> list[str]:
    """`::error`/`::warning`/`::notice` for the findings located on a line of a file, riskiest
    first: the same selection the check run annotates (high and critical are errors)."""
    lines = []
    for note in annotations(verdict, limit=ANNOTATIONS_MAX):
        message = note["message"]
        if note.get("raw_details"):
            message += "\n" + note["raw_details"]
        lines.append(
            workflow_command(
                _LEVEL_COMMANDS[note["annotation_level"]],
                message,
                file=path_prefix + note["path"],
                line=note["start_line"],
                endLine=note["end_line"],
                col=note.get("start_column"),
                title=note["title"],
            )
        )
    return lines


def _delimiter(value: str) -> str:
    while True:
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        if delimiter not in value:
            return delimiter


def write_github_output(path: Path, values: Mapping[str, str], multiline: set[str]) -> None:
    """Append outputs in GitHub's file format: `name=value`, or for any value that could
    hold a newline `name<<DELIM`, the value, `DELIM`, with a random delimiter (a fixed one
    could appear in the value and let it set other outputs)."""
    lines = []
    for name, value in values.items():
        if name in multiline or "\n" in value or "\r" in value:
            delimiter = _delimiter(value)
            lines += [f"{name}<<{delimiter}", value, delimiter]
        else:
            lines.append(f"{name}={value}")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def append_step_summary(path: Path, markdown: str, note: str) -> None:
    """Append the report, cut (at a line end, code blocks closed, `note` after it) so the
    step's summary stays within GitHub's 1 MiB, counting what the step wrote before."""
    used = path.stat().st_size if path.exists() else 0
    room = max(STEP_SUMMARY_LIMIT - used, 0)
    text = truncate_markdown(markdown, room, note) if utf8_size(markdown) > room else markdown
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def summary_note(env: Mapping[str, str], out: Path) -> str:
    return (
        f"\n\n---\n✂️ Cut to fit GitHub's 1 MiB step summary; the full `report.md` is in "
        f"`{out}` (the run's artifact){_run_link(env)}.\n"
    )


def _run_link(env: Mapping[str, str]) -> str:
    url = run_url(env)
    return f", see {url}" if url else ""


def run_url(env: Mapping[str, str]) -> str | None:
    server, repo, run = (
        env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run}"
    return None

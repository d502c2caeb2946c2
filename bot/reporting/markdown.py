"""The Markdown report, the document a maintainer reads before merging.

Rendered with Jinja2 from the Verdict alone, so the CLI, the PR comment, the Actions step
summary and the dashboard all show the same thing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from bot.judging.timeline import critical_path
from bot.judging.verdict import Verdict

BADGES = {"approve": "✅", "review": "🟡", "reject": "❌", "error": "⚠️"}
RISK_BADGES = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴", None: "⚪"}
STATUS_BADGES = {"passed": "✅ pass", "failed": "❌ fail", "skipped": "⏭️ not run"}

_env = Environment(
    loader=PackageLoader("bot.reporting", "templates"),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_env.filters["cell"] = lambda text: " ".join(str(text).split()).replace("|", "\\|")
_env.filters["short"] = lambda sha: (sha or "")[:12]


def render_markdown(verdict: Verdict) -> str:
    data = verdict.model_dump(mode="json")
    return _env.get_template("report.md.j2").render(
        v=data,
        e=data["evidence"],
        badge=BADGES,
        risk_badge=RISK_BADGES,
        status_badge=STATUS_BADGES,
        timeline=critical_path(verdict.stages),
    )


def write_outputs(verdict: Verdict, out_dir: Path) -> tuple[Path, Path]:
    """Write report.md and verdict.json, each atomically, so a reader never sees half."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = _atomic_write(out_dir / "report.md", render_markdown(verdict))
    data = verdict.model_dump_json(indent=2)
    verdict_path = _atomic_write(out_dir / "verdict.json", data + "\n")
    return report, verdict_path


def _atomic_write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

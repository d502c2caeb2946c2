"""Renderers that read only the Verdict: the Markdown report and the verdict JSON."""

from bot.report.markdown import render_markdown, write_outputs

__all__ = ["render_markdown", "write_outputs"]

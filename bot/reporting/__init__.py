"""Renderers that read only the Verdict: the Markdown report and the verdict JSON; and the
masking every output goes through (`masking`).

May import: judging.
"""

from bot.reporting.markdown import render_markdown, write_outputs

__all__ = ["render_markdown", "write_outputs"]

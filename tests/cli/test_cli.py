"""The CLI's exit codes: 1 means reject, so nothing else may end in 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_an_internal_error_exits_2_with_one_line_and_the_traceback_kept():
    """A bug of ours (any exception a command does not handle) is an error, never a reject."""
    program = textwrap.dedent(
        """
        import sys
        from bot.cli import main as cli

        @cli.app.command("boom")
        def boom() -> None:
            raise RuntimeError("the [red]gate[/] broke")

        sys.argv = ["gatekeeper", "boom"]
        cli.main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: internal error: RuntimeError: the [red]gate[/] broke" in proc.stderr
    assert "Traceback" not in proc.stderr
    log = Path(proc.stderr.split("(traceback in ")[1].split(")")[0].replace("\n", ""))
    try:
        assert "in boom\nRuntimeError: the [red]gate[/] broke" in log.read_text()
    finally:
        log.unlink()

"""The migrated base of a batch, kept by its first run for the runs that follow.

Every validation of one batch (the whole group, then the culprit search's prefixes and the
culprit alone) starts from the same base commit under the same policy: the same build, the
same migrations, the same seed, the same baseline checks. The first run keeps what that base
became (a dump of its database once migrated, seeded and checked, its statement log and its
baseline results); the later runs restore the dump instead of building, migrating, seeding and
checking the base again, and go straight to the change.

The dump is taken by the gate before any of the change's code has run in that run, and lives
in a 0700 directory of the gate's, removed with the batch. A later run that cannot restore it
makes its base itself, and keeps that one instead (bot/engine/baseline.py).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bot.checking import StepResult


@dataclass
class BaseRecord:
    """What one run kept of its base."""

    base_sha: str
    dump: Path
    base_log: str  # the database's statement log while the base migrated
    baseline: dict[str, StepResult]  # the suites' steps on the base, by criterion id
    evidence: dict[str, str] = field(default_factory=dict)  # e.g. baseline_error
    made_by: str = ""  # the head_ref of the run that kept it
    seconds: float = 0.0  # what the base's build, schema, seed and checks took there


class KeptBase:
    """Context manager holding at most one kept base (a batch has one base); its directory
    and dump go on exit."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.record: BaseRecord | None = None

    def __enter__(self) -> KeptBase:
        self.directory = Path(tempfile.mkdtemp(prefix="gatekeeper-base-"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory, self.record = None, None

    def for_base(self, base_sha: str) -> BaseRecord | None:
        """The kept base of `base_sha`, if a run kept it."""
        record = self.record
        return record if record is not None and record.base_sha == base_sha else None

    def dump_path(self) -> Path | None:
        """Where a run that keeps its base writes the dump; None once kept, or outside the
        `with` (nothing to keep into)."""
        if self.directory is None or self.record is not None:
            return None
        return self.directory / "base.dump"

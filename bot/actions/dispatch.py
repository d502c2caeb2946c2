"""The inputs of a `workflow_dispatch`: what a person, or the service's dispatch mode, asks the
step to validate. They arrive in the event file's `inputs`, not in a webhook shape;
`bot.actions.event` turns them into a Target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.actions.errors import ActionsError


@dataclass(frozen=True)
class DispatchInputs:
    """What a `workflow_dispatch` (or a `workflow_call` from one) asks to validate.

    The service's dispatch mode sends base_sha, head_sha, pr_number and run_id; a person
    usually gives a branch (head_ref) or a pull request number. Values arrive as strings in
    the event file (GitHub's `github.event.inputs`), booleans as "true"/"false".
    """

    base_ref: str | None = None
    head_ref: str | None = None
    base_sha: str | None = None
    head_sha: str | None = None
    pr_number: int | None = None
    run_id: str | None = None
    merged: bool = False

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DispatchInputs:
        raw = payload.get("inputs") or {}
        if not isinstance(raw, dict):
            raise ActionsError("the event's inputs are not an object")

        def text(name: str) -> str | None:
            value = raw.get(name)
            if value is None or isinstance(value, bool):
                return None
            return str(value).strip() or None

        number = text("pr_number")
        if number is not None and not number.isdigit():
            raise ActionsError(f"input pr_number must be a number, got '{number}'")
        merged = raw.get("merged", False)
        return cls(
            base_ref=text("base_ref"),
            head_ref=text("head_ref"),
            base_sha=text("base_sha"),
            head_sha=text("head_sha"),
            pr_number=int(number) if number else None,
            run_id=text("run_id"),
            merged=merged is True or str(merged).strip().lower() == "true",
        )

"""The critical path through a run's stages (bot/judging/timeline.py)."""

from __future__ import annotations

import pytest

from bot.judging.timeline import Slot, critical_path
from bot.judging.verdict import Stage, Verdict


def stage(
    name: str, started: float | None, seconds: float, ok: bool = True, within: str | None = None
) -> Stage:
    return Stage(name=name, started=started, seconds=seconds, ok=ok, within=within)


def by_name(slots: list[Slot]) -> dict[str, Slot]:
    return {slot.name: slot for slot in slots}


def test_sequential_stages_are_all_on_the_path():
    timeline = critical_path(
        [stage("merge", 0.0, 0.5), stage("sandbox", 0.5, 1.0), stage("migrate", 1.6, 2.0)]
    )
    assert timeline.path == "merge → sandbox → migrate"
    assert all(slot.critical and not slot.beside for slot in timeline.slots)
    assert timeline.seconds == pytest.approx(3.6)
    assert timeline.timed


def test_of_two_overlapping_stages_the_one_that_ended_last_is_on_the_path():
    # The head's build began first and ended first: the run waited on the base's.
    timeline = critical_path(
        [
            stage("merge", 0.0, 1.0),
            stage("build merge", 1.0, 4.0),
            stage("build base", 1.2, 6.0),
            stage("base schema", 7.2, 1.0),
        ]
    )
    assert timeline.path == "merge → build base → base schema"
    slots = by_name(timeline.slots)
    assert not slots["build merge"].critical
    assert slots["build merge"].beside == ("build base",)
    assert slots["build base"].beside == ("build merge",)
    assert [s.name for s in timeline.slots] == ["merge", "build merge", "build base", "base schema"]


def test_a_stage_holding_stages_gets_its_own_path_through_them():
    # `build` holds both builds, recorded before it (inner stages end first). The base's
    # began later and ended sooner than the head's: beside it, not inside it.
    timeline = critical_path(
        [
            stage("sandbox", 0.0, 1.0),
            stage("build base", 1.01, 2.0, within="build"),
            stage("build merge", 1.0, 5.0, within="build"),
            stage("build", 1.0, 5.1),
            stage("migrate", 6.1, 1.0),
        ]
    )
    assert timeline.path == "sandbox → build (build merge) → migrate"
    slots = by_name(timeline.slots)
    assert [s.name for s in timeline.slots][:4] == ["sandbox", "build", "build merge", "build base"]
    assert (slots["build"].depth, slots["build merge"].depth, slots["migrate"].depth) == (0, 1, 0)
    assert slots["build"].critical and slots["build merge"].critical
    assert not slots["build base"].critical
    # Side by side means with each other, not with the stage both ran inside.
    assert slots["build"].beside == ()
    assert slots["build base"].beside == ("build merge",)


def test_a_verdict_without_start_times_lays_its_stages_end_to_end():
    old = Verdict.model_validate(
        {
            "decision": "approve",
            "risk": "low",
            "summary": "s",
            "stages": [
                {"name": "merge", "seconds": 0.5, "ok": True},
                {"name": "build", "seconds": 2.0, "ok": True},
                {"name": "migrate", "seconds": 1.0, "ok": False},
            ],
        }
    )
    timeline = critical_path(old.stages)
    assert not timeline.timed
    assert [(s.name, s.start) for s in timeline.slots] == [
        ("merge", 0.0),
        ("build", 0.5),
        ("migrate", 2.5),
    ]
    assert timeline.path == "merge → build → migrate"
    assert not by_name(timeline.slots)["migrate"].ok


def test_nothing_ran():
    timeline = critical_path([])
    assert (timeline.slots, timeline.path, timeline.seconds) == ([], "", 0.0)

"""The run's stages on one clock, and the critical path through them.

Stages run side by side (the two builds run in threads), so their seconds no longer add up
to the run's, and the slowest stage is not always the one the run waited on. The critical
path is the chain that set the wall time: backwards from the stage that ended last, each
step is the stage that ended last before the one after it began; a stage that ran beside a
stage of the path and ended earlier is off it, and a path stage that holds stages of its own
(`build` holding `build base` and `build merge`, each naming it as `within`) gets its own
path through them.

Pure, on the verdict's stages alone, so the report and the dashboard show the same path and
a verdict written before stages carried `started` (they ran one after another then) lays out
end to end, as it always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.judging.verdict import Stage


@dataclass(frozen=True)
class Slot:
    """One stage placed on the run's clock."""

    name: str
    start: float
    seconds: float
    ok: bool
    depth: int  # how many stages it ran inside (`build merge` inside `build`: 1)
    critical: bool  # on the chain the run waited on
    beside: tuple[str, ...]  # stages that ran at the same time, neither inside the other


@dataclass(frozen=True)
class Timeline:
    slots: list[Slot]  # in the order the stages began
    path: str  # "merge → sandbox → build (build merge) → …"; "" when nothing ran
    seconds: float  # from the run's start to the end of its last stage
    timed: bool  # False: an old verdict's stages, laid end to end


def critical_path(stages: Sequence[Stage]) -> Timeline:
    """Places `stages` on the run's clock and marks the chain the run waited on."""
    spans = _spans(stages)
    parent = [_parent(i, stages, spans) for i in range(len(spans))]
    depth = [_depth(i, parent) for i in range(len(spans))]
    children = [[j for j, p in enumerate(parent) if p == i] for i in range(-1, len(spans))]
    critical: set[int] = set()

    def walk(members: list[int]) -> str:
        """The path through `members` (siblings); a path stage that holds stages is
        followed by the path through them in brackets."""
        chain = _chain(members, spans)
        critical.update(chain)
        steps = []
        for i in chain:
            inner = walk(children[i + 1])
            steps.append(f"{stages[i].name} ({inner})" if inner else stages[i].name)
        return " → ".join(steps)

    path = walk(children[0])
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], depth[i], i))
    slots = [
        Slot(
            name=stages[i].name,
            start=spans[i][0],
            seconds=spans[i][1] - spans[i][0],
            ok=stages[i].ok,
            depth=depth[i],
            critical=i in critical,
            beside=tuple(
                stages[j].name for j in order if j != i and _side_by_side(i, j, spans, parent)
            ),
        )
        for i in order
    ]
    return Timeline(
        slots=slots,
        path=path,
        seconds=max((end for _, end in spans), default=0.0),
        timed=all(stage.started is not None for stage in stages),
    )


def _spans(stages: Sequence[Stage]) -> list[tuple[float, float]]:
    """(start, end) of each stage; one without `started` begins where the latest ended."""
    spans, cursor = [], 0.0
    for stage in stages:
        start = cursor if stage.started is None else stage.started
        end = start + max(stage.seconds, 0.0)
        spans.append((start, end))
        cursor = max(cursor, end)
    return spans


def _parent(i: int, stages: Sequence[Stage], spans: list[tuple[float, float]]) -> int:
    """The stage `i` ran within: the latest of that name begun before it (or with it and
    recorded after it, as an enclosing stage ends later), so no stage holds its holder; -1
    for a stage of the run itself."""
    order = [(start, -j) for j, (start, _) in enumerate(spans)]
    holders = [
        j
        for j, stage in enumerate(stages)
        if stage.name == stages[i].within and order[j] < order[i]
    ]
    return max(holders, key=lambda j: order[j], default=-1)


def _depth(i: int, parent: list[int]) -> int:
    depth = 0
    while parent[i] != -1:
        i, depth = parent[i], depth + 1
    return depth


def _chain(members: list[int], spans: list[tuple[float, float]]) -> list[int]:
    """Backwards from the member that ended last, each step the member that ended last
    before the previous step began (the longer one on a tie); returned in time order."""
    chain: list[int] = []
    cursor = float("inf")
    while True:
        before = [i for i in members if i not in chain and spans[i][1] <= cursor]
        if not before:
            return chain[::-1]
        last = max(before, key=lambda i: (spans[i][1], -spans[i][0], -i))
        chain.append(last)
        cursor = spans[last][0]


def _side_by_side(i: int, j: int, spans: list[tuple[float, float]], parent: list[int]) -> bool:
    """The two overlapped in time and neither ran inside the other."""
    (s_i, e_i), (s_j, e_j) = spans[i], spans[j]
    return s_i < e_j and s_j < e_i and not _inside(i, j, parent) and not _inside(j, i, parent)


def _inside(inner: int, outer: int, parent: list[int]) -> bool:
    while parent[inner] != -1:
        inner = parent[inner]
        if inner == outer:
            return True
    return False

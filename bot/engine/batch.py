"""Several changes validated as one batch, and the search for the one that breaks it.

A batch asks what a merge queue asks: do the fixes still pass once merged together, in this
order? Two fixes that each pass alone can break each other (two migrations adding one column,
two Alembic heads, one fix's regression guard broken by the other), and only the combination
shows it. Two kinds of batch meet the same search:

- `gatekeeper validate --head A --head B ...` (`Batch`): the heads are merged in order onto
  the base in a scratch clone that shares the user's objects (the user's repository is only
  read);
- a merge queue's group (bot.github.pulls builds its `Chain`): the queue already merged its
  pull requests in order, one first-parent commit each on top of the group's base.

Either way the batch is a `Chain`: the heads and, for each, the commit holding it and every
head before it. Those commits are the batch's prefixes. When the whole is rejected,
`find_culprit` bisects them for the first head whose addition breaks it, then validates that
head alone to tell "fails alone" from "passes alone, fails after A". A head that conflicts
with those before it is named at once: the pipeline reports the conflict (its merge stage)
with the pair in its refs. Everything that runs a change's code goes through the caller's
validator (the pipeline, with the caller's cancellation), never around it. The batch's runs
share one base: the first keeps it migrated, seeded and checked, and the search's runs restore
it instead of making it again (bot/engine/kept.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.job import BatchMember, Job
from bot.engine.kept import KeptBase
from bot.gitrepo import Scratch
from bot.judging.verdict import Decision, Status, Verdict

# (job, repository holding its commits, the batch's kept base) -> verdict: the pipeline, as
# the caller runs it (`kept` goes to bot.engine.pipeline.validate).
Validator = Callable[[Job, Path, KeptBase], Verdict]
# The same, inside one batch: the search's runs, all with the batch's kept base.
Search = Callable[[Job, Path], Verdict]


@dataclass
class Chain:
    """A batch as the culprit search sees it: `heads` merged in order onto `base.base_sha`,
    `commits[i]` the commit holding heads[: i + 1], all of them in `repo`.

    `commits` is empty when the prefixes are not known (a head conflicts with those before
    it: `conflict` is its index; or a queue's commits do not map onto its pull requests)."""

    base: Job
    """What each prefix's Job is made from: repository, base ref and commit, trigger, policy."""
    heads: list[BatchMember]
    commits: list[str]
    repo: Path
    conflict: int | None = None

    def prefix(self, count: int) -> Job:
        """The Job of the first `count` heads merged in order, against the base."""
        heads = self.heads[:count]
        return self.base.model_copy(
            update={
                "head_ref": " + ".join(h.ref for h in heads),
                "head_sha": self.commits[count - 1],
                "batch": heads,
            }
        )

    def alone(self, head: BatchMember) -> Job:
        """The Job of one head alone, merged onto the base by the pipeline."""
        return self.base.model_copy(
            update={"head_ref": head.ref, "head_sha": head.sha, "batch": []}
        )


class Batch:
    """The command line's batch: the heads merged in order onto the base, in a scratch clone
    of `repo`.

    Use as a context manager; `chain.repo` is the clone to validate in (it holds the merge
    commits and, through `--shared`, every object of `repo`)."""

    def __init__(self, repo: Path, base: Job, heads: list[BatchMember]):
        if len(heads) < 2:
            raise ValueError("a batch has at least two heads")
        self.scratch = Scratch(repo)
        try:
            merged = self.scratch.merge_sequence(base.base_sha, [h.sha for h in heads])
        except BaseException:
            self.scratch.close()
            raise
        commits = merged.steps if merged.ok else []
        self.chain = Chain(base, heads, commits, self.scratch.clone, merged.at)
        self._steps = merged.steps

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.scratch.close()

    def job(self) -> Job:
        """The Job of the whole batch: every head's combination against the base. When a head
        does not merge onto those before it, the Job of that head against the combination of
        those before it instead, so that the pipeline's merge stage reports the conflict,
        naming both sides."""
        chain = self.chain
        if chain.conflict is None:
            return chain.prefix(len(chain.heads))
        at, heads = chain.conflict, chain.heads
        if at == 0:  # the first head does not merge onto the base itself
            return chain.alone(heads[0])
        return chain.base.model_copy(
            update={
                "base_ref": " + ".join([chain.base.base_ref, *(h.ref for h in heads[:at])]),
                "base_sha": self._steps[at - 1],
                "head_ref": heads[at].ref,
                "head_sha": heads[at].sha,
                "batch": heads[: at + 1],
            }
        )


@dataclass
class Culprit:
    """The head whose addition makes the batch fail, and how it was found."""

    head: BatchMember
    alone: bool
    """True when the head fails on its own too; False when it passes alone and fails only
    after the heads before it."""
    reason: str
    tried: list[dict[str, Any]] = field(default_factory=list)
    """What each validation was (`_tried`), in the order the search ran them."""


def failed(verdict: Verdict) -> bool:
    """A verdict against the change (reject): the only one a culprit search looks for; an
    error is the gate's failure and proves nothing about any head."""
    return verdict.decision is Decision.reject


def find_culprit(chain: Chain, validate: Search, whole: Verdict) -> Culprit | str:
    """The head whose addition makes the rejected batch fail; a string saying why the search
    could not tell (a prefix whose validation ended in error, prefixes not known) otherwise.

    Prefix 0 (the base) is taken as passing and the whole batch failed, so the first failing
    prefix is bisected for: about log2(n) validations, then one of the culprit alone (none
    when the culprit is the first head: its prefix is the head alone)."""
    heads = chain.heads
    tried = [_tried(heads, whole)]
    if chain.conflict is not None:
        head = heads[chain.conflict]
        if chain.conflict == 0:
            reason = f"{head.label} does not merge into {chain.base.base_ref}"
            return Culprit(head, True, reason, tried)
        after = ", ".join(h.label for h in heads[: chain.conflict])
        return Culprit(head, False, f"{head.label} conflicts with {after}: {whole.summary}", tried)
    if len(chain.commits) != len(heads):
        return "the culprit search needs one merge commit per change of the batch; not found"
    passing, failing = 0, len(heads)
    verdicts: dict[int, Verdict] = {failing: whole}
    while failing - passing > 1:
        middle = (passing + failing) // 2
        verdict = validate(chain.prefix(middle), chain.repo)
        tried.append(_tried(heads[:middle], verdict))
        if verdict.decision is Decision.error:
            what = tried[-1]["heads"]
            return f"the culprit search stopped: {what} ended in error: {verdict.summary}"
        if failed(verdict):
            failing, verdicts[middle] = middle, verdict
        else:
            passing = middle
    culprit, breaking = heads[failing - 1], verdicts[failing]
    if failing == 1:
        return Culprit(culprit, True, f"{culprit.label} fails alone: {breaking.summary}", tried)
    alone = validate(chain.alone(culprit), chain.repo)
    tried.append(_tried([culprit], alone))
    if failed(alone):
        return Culprit(culprit, True, f"{culprit.label} fails alone: {alone.summary}", tried)
    if alone.decision is Decision.error:
        return f"the culprit search stopped: {culprit.label} alone ended in error: {alone.summary}"
    after = ", ".join(h.label for h in heads[: failing - 1])
    guard = _broken_guard(breaking)
    broke = f"breaks {guard}'s guard" if guard else "fails"
    reason = f"{culprit.label} passes alone, {broke} after {after}: {breaking.summary}"
    return Culprit(culprit, False, reason, tried)


def _tried(heads: list[BatchMember], verdict: Verdict) -> dict[str, Any]:
    """One validation of the search: which heads, its decision and seconds, and whether its
    base was restored from the batch's kept one or made (bot/engine/kept.py)."""
    kept = verdict.evidence.get("base_kept") or {}
    return {
        "heads": " + ".join(h.label for h in heads),
        "decision": verdict.decision.value,
        "seconds": verdict.seconds,
        "base": "restored" if kept.get("restored") else "made",
    }


def _broken_guard(verdict: Verdict) -> str | None:
    """The bug id of the first regression suite the verdict failed: what an earlier fix
    guards is what a maintainer must hear broke, before any step id."""
    for criterion in verdict.criteria:
        if criterion.required and criterion.status is Status.failed and criterion.bug_id:
            return criterion.bug_id
    return None


def with_culprit(verdict: Verdict, found: Culprit | str) -> Verdict:
    """The batch's verdict with the search's result first among its reasons and in its
    evidence (`evidence.batch`), so every report of it names the culprit."""
    if isinstance(found, str):
        note, evidence = found, {"culprit": None, "note": found}
    else:
        note = f"culprit: {found.reason}"
        evidence = {
            "culprit": found.head.ref,
            "pr_number": found.head.pr_number,
            "fails_alone": found.alone,
            "reason": found.reason,
            "note": note,
            "tried": found.tried,
        }
    return verdict.model_copy(
        update={
            "reasons": [note, *verdict.reasons],
            "evidence": {**verdict.evidence, "batch": evidence},
        }
    )


def settle(chain: Chain, whole: Job, validate: Validator, searching: Callable[[], None]) -> Verdict:
    """The batch's verdict as every edge reports it: `whole` (the Job of the whole batch)
    validated and, when rejected, its culprit named (the search's validations go through
    `validate`, so the caller's cancellation stops them). `searching` is told first: the
    search can take log2(n) + 1 more validations, each restoring the base the first kept."""
    with KeptBase() as kept:
        verdict = validate(whole, chain.repo, kept)
        if not failed(verdict):
            return verdict
        searching()
        found = find_culprit(chain, lambda job, repo: validate(job, repo, kept), verdict)
        return with_culprit(verdict, found)


def named_culprit(verdict: Verdict) -> tuple[int, str] | None:
    """The pull request a batch's verdict names as its culprit, and why; None when it names
    none, or names a head that is no pull request (the command line's)."""
    found: dict[str, Any] = verdict.evidence.get("batch") or {}
    number = found.get("pr_number")
    return (int(number), str(found["reason"])) if number is not None else None

"""Several builder branches validated as one batch, and the search for the one that breaks it.

`gatekeeper validate --head A --head B ...` asks what a merge queue would: do the fixes still
pass once merged together, in this order? Two fixes that each pass alone can break each other
(two migrations adding one column, one fix's regression guard broken by the other), and only
the combination shows it.

The heads are merged in order onto the base in a scratch clone that shares the user's objects
(the user's repository is only read); the combination is one commit there, and that clone is
the repository the pipeline validates, as one Job whose `batch` lists the heads. Everything
that runs a change's code goes through the caller's validator (the pipeline), never around it.

When the batch is rejected, `find_culprit` bisects its prefixes (A, A+B, ...) for the first
head whose addition breaks it, then validates that head alone to tell "fails alone" from
"passes alone, fails after A". A head that conflicts with those before it is named at once:
the pipeline reports the conflict (its merge stage) with the pair in its refs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.engine.job import BatchMember, Job
from bot.gitrepo import Scratch
from bot.judging.verdict import Decision, Verdict

# (job, repository holding its commits) -> verdict: the pipeline, as the caller runs it.
Validator = Callable[[Job, Path], Verdict]


@dataclass
class Culprit:
    """The head whose addition makes the batch fail, and how it was found."""

    ref: str
    alone: bool
    """True when the head fails on its own too; False when it passes alone and fails only
    after the heads before it."""
    reason: str
    tried: list[tuple[str, str]] = field(default_factory=list)
    """(what was validated, its decision), in the order the search ran them."""


class Batch:
    """The heads merged in order onto the base, in a scratch clone of `repo`.

    Use as a context manager; `clone` is the repository to validate in (it holds the
    combination commits and, through `--shared`, every object of `repo`)."""

    def __init__(self, repo: Path, base: Job, heads: list[BatchMember]):
        if len(heads) < 2:
            raise ValueError("a batch has at least two heads")
        self.base = base
        self.heads = heads
        self.scratch = Scratch(repo)
        self.clone = self.scratch.clone

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.scratch.close()

    def job(self, count: int | None = None) -> Job:
        """The Job of the first `count` heads (all by default): their combination against the
        base. When one of them does not merge onto those before it, the Job of that head
        against the combination of those before it instead, so that the pipeline's merge stage
        reports the conflict, naming both sides."""
        heads = self.heads[: count or len(self.heads)]
        if len(heads) == 1:
            return self.job_of(heads[0])
        merged = self.scratch.merge_sequence(self.base.base_sha, [h.sha for h in heads])
        if not merged.ok:
            assert merged.at is not None
            return self._conflict(heads, merged.at)
        assert merged.sha is not None
        return self.base.model_copy(
            update={
                "head_ref": " + ".join(h.ref for h in heads),
                "head_sha": merged.sha,
                "batch": heads,
            }
        )

    def job_of(self, head: BatchMember) -> Job:
        """The Job of one head alone against the base."""
        return self.base.model_copy(update={"head_ref": head.ref, "head_sha": head.sha})

    def _conflict(self, heads: list[BatchMember], at: int) -> Job:
        if at == 0:  # the first head does not merge onto the base itself
            return self.job_of(heads[0])
        before = self.scratch.merge_sequence(self.base.base_sha, [h.sha for h in heads[:at]])
        assert before.sha is not None
        return self.base.model_copy(
            update={
                "base_ref": " + ".join([self.base.base_ref, *(h.ref for h in heads[:at])]),
                "base_sha": before.sha,
                "head_ref": heads[at].ref,
                "head_sha": heads[at].sha,
                "batch": heads[: at + 1],
            }
        )

    def conflict_at(self) -> int | None:
        """The index of the first head that does not merge onto the base and those before it."""
        return self.scratch.merge_sequence(self.base.base_sha, [h.sha for h in self.heads]).at


def failed(verdict: Verdict) -> bool:
    """A verdict against the change (reject): the only one a culprit search looks for; an
    error is the gate's failure and proves nothing about any head."""
    return verdict.decision is Decision.reject


def find_culprit(batch: Batch, validate: Validator, whole: Verdict) -> Culprit | str:
    """The head whose addition makes the rejected batch fail; a string saying why the search
    could not tell (a prefix whose validation ended in error) otherwise.

    Prefix 0 (the base) is taken as passing and the whole batch failed, so the first failing
    prefix is bisected for: about log2(n) validations, then one of the culprit alone."""
    heads, tried = batch.heads, [(" + ".join(h.ref for h in batch.heads), whole.decision.value)]
    conflict = batch.conflict_at()
    if conflict is not None:
        ref = heads[conflict].ref
        if conflict == 0:
            return Culprit(ref, True, f"{ref} does not merge into {batch.base.base_ref}", tried)
        after = ", ".join(h.ref for h in heads[:conflict])
        return Culprit(ref, False, f"{ref} conflicts with {after}: {whole.summary}", tried)
    passing, failing = 0, len(heads)
    verdicts: dict[int, Verdict] = {failing: whole}
    while failing - passing > 1:
        middle = (passing + failing) // 2
        verdict = validate(batch.job(middle), batch.clone)
        tried.append((" + ".join(h.ref for h in heads[:middle]), verdict.decision.value))
        if verdict.decision is Decision.error:
            return f"the culprit search stopped: {tried[-1][0]} ended in error: {verdict.summary}"
        if failed(verdict):
            failing, verdicts[middle] = middle, verdict
        else:
            passing = middle
    culprit = heads[failing - 1]
    breaking = verdicts[failing]
    if failing == 1:
        return Culprit(culprit.ref, True, f"{culprit.ref} fails alone: {breaking.summary}", tried)
    alone = validate(batch.job_of(culprit), batch.clone)
    tried.append((culprit.ref, alone.decision.value))
    after = ", ".join(h.ref for h in heads[: failing - 1])
    if failed(alone):
        return Culprit(culprit.ref, True, f"{culprit.ref} fails alone: {alone.summary}", tried)
    if alone.decision is Decision.error:
        return f"the culprit search stopped: {culprit.ref} alone ended in error: {alone.summary}"
    return Culprit(
        culprit.ref,
        False,
        f"{culprit.ref} passes alone, fails after {after}: {breaking.summary}",
        tried,
    )


def with_culprit(verdict: Verdict, found: Culprit | str) -> Verdict:
    """The batch's verdict with the search's result first among its reasons and in its
    evidence (`evidence.batch`), so every report of it names the culprit."""
    if isinstance(found, str):
        note, evidence = found, {"culprit": None, "note": found}
    else:
        note = f"culprit: {found.reason}"
        evidence = {
            "culprit": found.ref,
            "fails_alone": found.alone,
            "note": note,
            "tried": [{"heads": what, "decision": d} for what, d in found.tried],
        }
    return verdict.model_copy(
        update={
            "reasons": [note, *verdict.reasons],
            "evidence": {**verdict.evidence, "batch": evidence},
        }
    )

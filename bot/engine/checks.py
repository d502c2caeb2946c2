"""The change's check suites on its API and database, compared with the base's run of them.

Part of the run (bot/engine/pipeline.py).
"""

from __future__ import annotations

from bot.checking import run_suite
from bot.engine.state import RunState, tail
from bot.judging.decision import is_required
from bot.judging.verdict import Status
from bot.sandbox import ApiStartError
from bot.sandbox.base import BuildFailed


class Checks(RunState):
    """The run's check stage."""

    def _compare_with_baseline(self) -> None:
        rows = []
        for crit in self.criteria:
            base = self.baseline.get(crit.id)
            if base is None:
                continue
            before = base.criterion.status
            if before is Status.passed and crit.status is Status.failed:
                crit.evidence += " — it passed on the base branch: this change broke it"
            elif before is not Status.passed and crit.status is Status.passed:
                crit.evidence += " — it failed on the base branch: this change fixed it"
            rows.append(
                {
                    "id": crit.id,
                    "title": crit.title,
                    "base": before.value,
                    "head": crit.status.value,
                    "base_ms": base.duration_ms,
                    "head_ms": crit.duration_ms,
                    "base_evidence": base.criterion.evidence,
                }
            )
        self.evidence["baseline"] = rows

    def _checks(self, sandbox, migrator, head_dir, suites, headers) -> None:
        spec = migrator.spec
        if spec is not None and sandbox.api_url is None:
            try:
                migrator.start_api(head_dir, "head")
            except BuildFailed as exc:
                self._image_failed(exc, suites)
            except ApiStartError as exc:
                self.criterion(
                    "api.start",
                    "the API starts on the migrated database",
                    False,
                    f"{exc}\n{tail(exc.log_tail, 25)}",
                    gate=True,
                )
                self._skip_all(suites, "not run: the API did not start")
                return
        ctx = self._context(sandbox, headers, migrator.start_marks)
        for suite in suites:
            self.progress(f"checks: {suite.id}")
            result = run_suite(suite, ctx)
            self.suite_results.append(result)
            for step in result.steps:
                crit = step.criterion
                crit.required = is_required(crit.id, crit.required, self.policy.decision)
                self.criteria.append(crit)
                budget = next(
                    (s.within_ms for s in suite.steps if s.id == crit.id.split("/")[-1]), None
                )
                if budget and crit.duration_ms and crit.duration_ms > 0.8 * budget:
                    self.observed.slow_steps.append(
                        f"{crit.id} took {crit.duration_ms:.0f} ms of its {budget:.0f} ms budget"
                    )
        self.evidence["suites"] = [r.model_dump(mode="json") for r in self.suite_results]
        self._compare_with_baseline()

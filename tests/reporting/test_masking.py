"""Every secret the process knows is `***` in the verdict, however the change printed it."""

from __future__ import annotations

import base64

import pytest

from bot.judging.verdict import Criterion, Decision, Risk, Status, Verdict
from bot.reporting.masking import MASK, Masker, from_environment

SECRET = 's3cr"t\\value-0123'


@pytest.mark.parametrize(
    "printed",
    [
        SECRET,
        f"x{SECRET}y",
        base64.b64encode(b"LEAK=" + SECRET.encode()).decode(),
        base64.b64encode(b"AB" + SECRET.encode() + b"\n").decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        SECRET[:7] + "\n" + SECRET[7:],  # fold -w 7
    ],
)
def test_every_form_of_a_secret_is_masked(printed: str) -> None:
    masked = Masker([SECRET]).text(printed)
    assert MASK in masked and SECRET[3:12] not in masked


def test_the_verdict_is_masked_string_by_string() -> None:
    """A secret holding a quote and a backslash is found in the strings themselves (in their
    JSON form both would be escaped)."""
    verdict = Verdict(
        decision=Decision.reject,
        risk=Risk.low,
        summary=f"reject: build printed {SECRET}",
        criteria=[
            Criterion(id="build", title="t", status=Status.failed, evidence=f"env: K={SECRET}")
        ],
        evidence={"build": [{"tail": f"K={SECRET}"}]},
    )
    masked = Masker([SECRET]).model(verdict)
    assert SECRET not in masked.model_dump_json() and SECRET not in str(masked.model_dump())
    assert masked.criteria[0].evidence == "env: K=***"


def test_known_harmless_names_are_kept_and_any_other_is_a_secret() -> None:
    environ = {
        "PATH": "/usr/local/bin:/usr/bin",
        "GITHUB_REPOSITORY": "octo/repository",
        "GITHUB_PERSONAL_TOKEN": "ghp_0123456789abcdef",  # not on the list: a secret
        "MY_DEPLOY_SECRET": "deploy-0123456789",
        "SHORT": "1234",  # below MIN_LENGTH: masking it would deface every report
    }
    masker = from_environment(environ, extra=["from-the-settings-42"])
    text = " ".join(environ.values()) + " from-the-settings-42"
    assert masker.text(text) == "/usr/local/bin:/usr/bin octo/repository *** *** 1234 ***"

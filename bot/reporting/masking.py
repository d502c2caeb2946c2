"""Secret values never reach an output, even when the code under review prints them.

The change's processes get a constructed environment (bot/sandbox/environment.py), so they
should hold no secret of ours; but the operator passes some on purpose (GATEKEEPER_PASS_ENV),
and a gate must not trust one line of defence. So, as GitHub Actions does for `add-mask`
values, every secret value Gatekeeper's process knows is replaced by `***` in the verdict —
and through it in the report, the JSON, the dashboard, statuses, check runs, comments,
annotations, the step summary and the step's outputs — also when it was printed base64-encoded,
URL-encoded or broken across lines.

A secret is the value of any variable in Gatekeeper's environment except the well-known
harmless ones below (a path, a locale, the runner's names), plus the App's private key read
from GATEKEEPER_APP_PRIVATE_KEY_FILE. Values shorter than `MIN_LENGTH` are left alone: masking
"1" or "true" would deface every report and hide nothing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

MASK = "***"
MIN_LENGTH = 8
KEY_FILE_ENV = "GATEKEEPER_APP_PRIVATE_KEY_FILE"

# Names whose values are not secrets (and would mask half a report if they were taken for
# one). Listed one by one: a name not here is a secret, so a new variable fails closed.
_HARMLESS = re.compile(
    r"PATH|HOME|PWD|OLDPWD|SHELL|USER|LOGNAME|HOSTNAME|TERM|LANG|LANGUAGE|LC_[A-Z]+|TZ|TMPDIR"
    r"|SHLVL|_|CI|VIRTUAL_ENV|PYTHONUNBUFFERED|PYTHONDONTWRITEBYTECODE|DEBIAN_FRONTEND|MAIL"
    r"|COLUMNS|LINES|EDITOR|PAGER|ImageOS|ImageVersion|GATEKEEPER_PASS_ENV"
    r"|RUNNER_(OS|ARCH|NAME|TEMP|TOOL_CACHE|WORKSPACE|ENVIRONMENT|DEBUG|TRACKING_ID|PERFLOG)"
    r"|GITHUB_(ACTION|ACTION_PATH|ACTION_REF|ACTION_REPOSITORY|ACTIONS|ACTOR|ACTOR_ID|API_URL"
    r"|BASE_REF|ENV|EVENT_NAME|EVENT_PATH|GRAPHQL_URL|HEAD_REF|JOB|OUTPUT|PATH|REF|REF_NAME"
    r"|REF_PROTECTED|REF_TYPE|REPOSITORY|REPOSITORY_ID|REPOSITORY_OWNER|REPOSITORY_OWNER_ID"
    r"|RETENTION_DAYS|RUN_ATTEMPT|RUN_ID|RUN_NUMBER|SERVER_URL|SHA|STATE|STEP_SUMMARY"
    r"|TRIGGERING_ACTOR|WORKFLOW|WORKFLOW_REF|WORKFLOW_SHA|WORKSPACE)"
    r"|GATEKEEPER_(STATE_DIR|PUBLIC_URL|STATUS_CONTEXT|GITHUB_API_URL|GITHUB_WEB_URL"
    r"|CLONE_URL|DEFAULT_POLICY|APP_ID|LOG_JSON|[A-Z_]+_INTERVAL|SHUTDOWN_GRACE|WORKERS"
    r"|POLICY|SANDBOX|POST|COMMENT|REPO|OUT)"
)
# Beyond this length a secret is matched line by line (a PEM key), not character by character.
_SPLIT_LIMIT = 256

M = TypeVar("M", bound=BaseModel)


class Masker:
    """Replaces every form of the given secrets in text; cheap to apply to a whole verdict."""

    def __init__(self, secrets: Iterable[str]):
        patterns: set[str] = set()
        for secret in {s for s in secrets if len(s.strip()) >= MIN_LENGTH}:
            patterns.update(_forms(secret))
        # Longest first: a secret's base64 must not be half-masked by a shorter secret.
        ordered = sorted(patterns, key=len, reverse=True)
        self._pattern = re.compile("|".join(ordered)) if ordered else None

    def text(self, value: str) -> str:
        return value if self._pattern is None else self._pattern.sub(MASK, value)

    def model(self, model: M) -> M:
        """The same model with every string in it masked: each string as it is, not its
        JSON form, so a secret holding a quote or a backslash is found too."""
        if self._pattern is None:
            return model
        return type(model).model_validate(self._masked(model.model_dump(mode="json")))

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._masked(k): self._masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._masked(item) for item in value]
        return value


def from_environment(environ: Mapping[str, str], extra: Iterable[str] = ()) -> Masker:
    """A Masker for every secret Gatekeeper's own environment holds (see the module doc),
    and `extra` ones the caller holds elsewhere (settings, tokens)."""
    secrets = [value for name, value in environ.items() if not _HARMLESS.fullmatch(name)]
    secrets += extra
    key_file = environ.get(KEY_FILE_ENV)
    if key_file:
        # An unreadable key is the App's to report; there is nothing to mask then.
        with suppress(OSError):
            secrets.append(Path(key_file).read_text())
    return Masker(secrets)


def _forms(secret: str) -> set[str]:
    """Regular expressions for the secret as printed, encoded, or split across lines."""
    forms = {re.escape(secret), re.escape(quote(secret, safe=""))}
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            # Inside a longer encoded blob the secret starts at any of three byte offsets;
            # keep only the characters that depend on the secret's bytes alone.
            encoded = encode(b"\0" * offset + raw).decode().rstrip("=")
            start = (offset * 4 + 2) // 3
            end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0)
            if end - start >= MIN_LENGTH:
                forms.add(re.escape(encoded[start:end]))
    lines = [line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_LENGTH]
    if len(lines) > 1 or len(secret) > _SPLIT_LIMIT:
        forms.update(re.escape(line) for line in lines)
    else:
        # `fold -w 10`, a log wrapper's line breaks, a JSON line with its "\n" escapes.
        forms.add(r"(?:\s|\\n)*".join(re.escape(char) for char in secret.strip()))
    return forms

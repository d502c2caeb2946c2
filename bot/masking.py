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
from typing import TypeVar
from urllib.parse import quote

from pydantic import BaseModel

MASK = "***"
MIN_LENGTH = 8
KEY_FILE_ENV = "GATEKEEPER_APP_PRIVATE_KEY_FILE"

# Names whose values are not secrets (and would mask half a report if they were taken for one).
_HARMLESS = re.compile(
    r"PATH|HOME|PWD|OLDPWD|SHELL|USER|LOGNAME|HOSTNAME|TERM|LANG|LANGUAGE|LC_\w+|TZ|TMPDIR"
    r"|SHLVL|_|CI|VIRTUAL_ENV|PYTHON\w*|PIP_\w+|UV_\w+|XDG_\w+|DEBIAN_FRONTEND|MAIL|COLUMNS"
    r"|LINES|PS1|EDITOR|PAGER|ImageOS|ImageVersion|RUNNER_\w+|GATEKEEPER_PASS_ENV"
    r"|GITHUB_(?!TOKEN)\w+|GATEKEEPER_(STATE_DIR|PUBLIC_URL|STATUS_CONTEXT|GITHUB_API_URL"
    r"|CLONE_URL|DEFAULT_POLICY|APP_ID|LOG_\w+|\w+_INTERVAL|\w+_GRACE)"
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
        """The same model with every string masked (through its JSON form)."""
        if self._pattern is None:
            return model
        return type(model).model_validate_json(self.text(model.model_dump_json()))


def from_environment(environ: Mapping[str, str]) -> Masker:
    """A Masker for every secret Gatekeeper's own environment holds (see the module doc)."""
    secrets = [value for name, value in environ.items() if not _HARMLESS.fullmatch(name)]
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
        # `fold -w 10`, a JSON string with "\n", a log wrapper's line breaks.
        forms.add(r"(?:\s|\\n)*".join(re.escape(char) for char in secret.strip()))
    return forms

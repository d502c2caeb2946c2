"""Policies: YAML files that say how a repository's gate runs and decides; the hardened YAML
loader they and the suites go through (`yamlfile`).

May import: judging (rule ids, risk levels), checking (JSONPath checks), sandbox (which
variables may be passed).
"""

from bot.policy.loader import (
    REPO_POLICY_PATH,
    LoadedPolicy,
    api_env,
    default_policy_path,
    load_policy,
    load_policy_text,
)
from bot.policy.model import Policy, duration_seconds

__all__ = [
    "REPO_POLICY_PATH",
    "LoadedPolicy",
    "Policy",
    "api_env",
    "default_policy_path",
    "duration_seconds",
    "load_policy",
    "load_policy_text",
]
